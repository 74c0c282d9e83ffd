"""Maps the top-level folders onto the `secureinfer.*` import namespace (docs/DESIGN.md, "Layers")."""

from setuptools import find_packages, setup

PACKAGE_ROOTS = {
    "secureinfer": "secureinfer",
    "secureinfer.mpc": "mpc",
    "secureinfer.nodes": "nodes",
    "secureinfer.selector": "selector",
    "secureinfer.v1": "protos/secureinfer/v1",
}


def _packages() -> list[str]:
    found = []
    for name, folder in PACKAGE_ROOTS.items():
        found.append(name)
        found.extend(f"{name}.{sub}" for sub in find_packages(folder))
    return found


# The performance stores the selector CLI learns from by default (secureinfer/lab/stores.py).
PACKAGE_DATA = {"secureinfer.lab": ["data/*.sqlite"]}

setup(packages=_packages(), package_dir=PACKAGE_ROOTS, package_data=PACKAGE_DATA)
