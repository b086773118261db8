"""Files shipped inside the ``glimpse3d_assets`` package, read with :mod:`importlib.resources` so that an
installed wheel finds them as a checkout does.

* ``ablations.yaml``: the named pipeline variants (:mod:`glimpse3d_assets.variants`);
* ``dagster.yaml``: the Dagster instance defaults (``gpu`` concurrency pool, run monitoring) that
  ``glimpse3d run`` copies into a new ``DAGSTER_HOME``.
"""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable

ABLATIONS_FILE = "ablations.yaml"
INSTANCE_FILE = "dagster.yaml"


def package_file(name: str) -> Traversable:
    """The packaged file ``name`` (a real path for a normal install; read it with ``read_text``)."""
    return resources.files(__package__) / name


def instance_yaml() -> str:
    """The text of the packaged Dagster instance defaults (``dagster.yaml``)."""
    return package_file(INSTANCE_FILE).read_text(encoding="utf-8")
