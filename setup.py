"""Maps the top-level ``modalities/``, ``models/``, ``toy/``, ``assets/`` and ``configs/`` folders
into the ``mmalign`` namespace.

Nothing named ``models``, ``modalities`` or ``toy`` lands in site-packages: they install as
``mmalign.modalities``, ``mmalign.models`` and ``mmalign.toy``. ``assets/`` (tiny data and
checkpoints) and ``configs/`` (bundled recipes) install as the data packages ``mmalign.assets``
and ``mmalign.configs``, so a wheel finds them through ``importlib.resources`` exactly as a
checkout does.
"""
from setuptools import find_namespace_packages, find_packages, setup

ROOTS = {"mmalign.modalities": "modalities", "mmalign.models": "models", "mmalign.toy": "toy"}
DATA = {"mmalign.assets": "assets", "mmalign.configs": "configs"}

packages = find_packages(include=["mmalign", "mmalign.*"])
package_dir = {"mmalign": "mmalign"}
for name, folder in ROOTS.items():
    package_dir[name] = folder
    packages += [name] + [f"{name}.{sub}" for sub in find_packages(folder)]

package_data = {}
for name, folder in DATA.items():  # every file below the folder; each subfolder a data package
    package_dir[name] = folder
    subs = [name] + [f"{name}.{sub}" for sub in find_namespace_packages(folder, exclude=["*__pycache__*"])]
    packages += subs
    package_data.update({sub: ["*"] for sub in subs})

setup(packages=packages, package_dir=package_dir, package_data=package_data,
      exclude_package_data={"": ["*.pyc"]})
