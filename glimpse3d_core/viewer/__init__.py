"""Browser viewer for results: the self-contained ``viewer.html`` and the gallery ``glimpse3d view`` serves."""
