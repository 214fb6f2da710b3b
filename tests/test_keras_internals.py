"""The one door to private Keras internals, and the Keras range it covers.

`keras_vae/_keras_internals.py` is the only module that touches private
Keras (and TensorFlow converter) attributes; the rest of the package uses
the public API. These tests read the source: a private name the door
module uses may appear nowhere else, no module imports `keras.src`, and
the Keras range of `setup.cfg` is the one the door module checks.
"""

import ast
import configparser
import pathlib

import keras
import pytest

from keras_vae import _keras_internals

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOOR = ROOT / "keras_vae" / "_keras_internals.py"
OWN_OBJECTS = {"self", "cls"}
NAME_FUNCTIONS = {"getattr", "setattr", "hasattr", "delattr"}


def _private(name):
    return name.startswith("_") and not name.startswith("__")


def _private_names(tree):
    """Private attribute names read or written on objects other than self.

    Both `obj._name` and `getattr(obj, "_name", ...)` forms count.
    """
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            owner = node.value
            if not (isinstance(owner, ast.Name) and owner.id in OWN_OBJECTS):
                found.add(node.attr)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id in NAME_FUNCTIONS and len(node.args) >= 2
              and isinstance(node.args[1], ast.Constant)
              and isinstance(node.args[1].value, str)
              and _private(node.args[1].value)):
            found.add(node.args[1].value)
    return found


def _uses_keras_src(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "keras.src"):
            return True
        if isinstance(node, ast.Import) and any(
                alias.name.startswith("keras.src") for alias in node.names):
            return True
        if (isinstance(node, ast.Attribute) and node.attr == "src"
                and isinstance(node.value, ast.Name)
                and node.value.id == "keras"):
            return True
    return False


def _package_modules():
    paths = sorted((ROOT / "keras_vae").rglob("*.py"))
    return [path for path in paths if path != DOOR] + [
        ROOT / "export" / "litert_vae.py"]


def test_the_door_module_lists_what_it_uses():
    door_names = _private_names(ast.parse(DOOR.read_text()))
    # The scan works: the door module's own accesses are found.
    assert {"_tracker", "_compile_config", "_initial_epoch"} <= door_names
    docstring = ast.get_docstring(ast.parse(DOOR.read_text()))
    undocumented = sorted(name for name in door_names
                          if name not in docstring)
    assert not undocumented, (
        f"private names used in {DOOR.name} without a line in its docstring "
        f"saying why: {undocumented}")


def test_private_keras_access_lives_only_in_the_door_module():
    door_names = _private_names(ast.parse(DOOR.read_text()))
    offenders = []
    for path in _package_modules():
        tree = ast.parse(path.read_text())
        leaked = sorted(_private_names(tree) & door_names)
        if leaked:
            offenders.append(f"{path.relative_to(ROOT)}: {leaked}")
        if _uses_keras_src(tree):
            offenders.append(f"{path.relative_to(ROOT)}: keras.src")
    assert not offenders, (
        "private Keras access outside keras_vae/_keras_internals.py (add a "
        f"function there instead): {offenders}")


def test_the_scan_finds_a_private_keras_access():
    leaky = ast.parse(
        "def f(model, layer):\n"
        "    model._compile_config.config.update(x=1)\n"
        "    return getattr(layer, '_tracker')\n"
        "from keras.src import backend\n")
    assert {"_compile_config", "_tracker"} <= _private_names(leaky)
    assert _uses_keras_src(leaky)
    own = ast.parse("class A:\n    def f(self):\n        return self._x\n")
    assert _private_names(own) == set()


def test_installed_keras_is_inside_the_supported_range():
    assert _keras_internals.check_keras_version() == keras.__version__


@pytest.mark.parametrize("version", ["3.14.1", "3.16.0", "4.0.0", "2.15.0"])
def test_keras_outside_the_range_fails_naming_the_door_module(version):
    with pytest.raises(ImportError) as info:
        _keras_internals.check_keras_version(version)
    message = str(info.value)
    assert "keras_vae/_keras_internals.py" in message
    assert f"Received: keras=={version}" in message
    assert "pip install" in message


def test_setup_cfg_pins_the_range_the_door_module_checks():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    requirements = [line.strip() for line in
                    config["options"]["install_requires"].splitlines()]
    keras_lines = [line for line in requirements
                   if line.startswith("keras") and not line.startswith(
                       ("keras-", "keras_"))]
    (low_major, low_minor), (high_major, high_minor) = (
        _keras_internals.SUPPORTED_KERAS)
    assert keras_lines == [
        f"keras>={low_major}.{low_minor},<{high_major}.{high_minor}"]
