"""Generate the tutorial notebooks `colab/*.ipynb` from their sources.

The tutorials are written as jupytext "percent" scripts (`colab/NN_*.py`):
runnable with `python`, readable in a diff, and the single source of truth.
This script turns each one into a notebook with no outputs, fixed cell ids
and Colab metadata, so the same source always gives byte-identical files
(`tests/test_notebooks.py` checks that the committed notebooks are in sync).

Usage:

    python colab/generate.py           # rewrite colab/*.ipynb
    python colab/generate.py --check   # exit 1 if a notebook is stale

Example:

>>> import importlib.util  # doctest: +SKIP
>>> text = render("colab/01_quickstart.py")  # doctest: +SKIP
"""

import argparse
import hashlib
import pathlib
import sys

COLAB_DIR = pathlib.Path(__file__).resolve().parent
# Sources are `NN_name.py`; this script and helpers are not tutorials.
SOURCE_GLOB = "[0-9][0-9]_*.py"
NOTEBOOK_METADATA = {
    "accelerator": "CPU",
    "colab": {"provenance": [], "toc_visible": True},
    "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
    "language_info": {"name": "python"},
}


def sources(directory=COLAB_DIR):
    """The tutorial sources in `directory`, sorted by name.

    Args:
        directory: str or `pathlib.Path`. Folder holding `NN_*.py` files.

    Returns:
        list of `pathlib.Path`.
    """
    return sorted(pathlib.Path(directory).glob(SOURCE_GLOB))


def notebook_path(source):
    """The `.ipynb` path generated from `source` (same name and folder)."""
    return pathlib.Path(source).with_suffix(".ipynb")


def _cell_id(stem, index, source):
    # Stable across runs (jupytext draws random ids) and unique per cell.
    digest = hashlib.sha1(f"{stem}:{index}:{source}".encode()).hexdigest()
    return digest[:12]


def render(source):
    """The notebook JSON text for one percent-format source file.

    Outputs and execution counts are empty, jupytext's own metadata is
    dropped (it names the jupytext version) and cell ids are derived from
    the cell contents, so the result depends on the source text only.

    Args:
        source: str or `pathlib.Path`. A jupytext percent `.py` file.

    Returns:
        str. The `.ipynb` file contents, ending with a newline.
    """
    import jupytext
    import nbformat

    source = pathlib.Path(source)
    notebook = jupytext.read(source, fmt="py:percent")
    notebook.metadata = nbformat.from_dict(NOTEBOOK_METADATA)
    for index, cell in enumerate(notebook.cells):
        cell.metadata = nbformat.from_dict({})
        cell.id = _cell_id(source.stem, index, cell.source)
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    notebook.nbformat, notebook.nbformat_minor = 4, 5
    nbformat.validate(notebook)
    return nbformat.writes(notebook, version=4) + "\n"


def main(argv=None):
    """Write (or with `--check`, compare) every notebook; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true",
        help="do not write; exit 1 if a notebook differs from its source",
    )
    args = parser.parse_args(argv)
    stale = []
    for source in sources():
        target = notebook_path(source)
        text = render(source)
        current = target.read_text(encoding="utf-8") if target.exists() else None
        if current == text:
            continue
        if args.check:
            stale.append(target.name)
        else:
            target.write_text(text, encoding="utf-8")
            print(f"wrote {target.relative_to(COLAB_DIR.parent)}")
    if stale:
        print(
            f"stale notebooks: {', '.join(stale)}; run `python colab/generate.py`",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
