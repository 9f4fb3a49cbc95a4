"""The composition root: the ``meshserve`` command, and the wiring that puts a
router, a puller and a runtime adapter around the mesh core in one node.

This is the only package that imports all of the others (DESIGN.md §6 puts
the CLI in ``mesh``; it lives here instead so that ``mesh`` never imports the
packages that depend on it).
"""
