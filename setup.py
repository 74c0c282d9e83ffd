"""Maps the top-level folders onto the `secureinfer.*` import namespace (see DESIGN.md, "Layers")."""

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


setup(packages=_packages(), package_dir=PACKAGE_ROOTS)
