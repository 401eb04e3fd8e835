"""Comparing strategies: the compare file (``recipe``), the runner with its caches and
table (``runner``), and the chart (``plot``).

Not named ``compare``: a submodule of that name would replace the function
``fusekit.compare`` on the package the first time it is imported.
"""
