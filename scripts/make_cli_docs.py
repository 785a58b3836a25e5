"""Write docs/cli.md, the command line reference, from the argparse parser itself.

    python scripts/make_cli_docs.py           # (re)write docs/cli.md
    python scripts/make_cli_docs.py --check   # exit 1 if docs/cli.md is stale

The help is formatted at a fixed width, whatever the terminal, and the text is checked
for paths taken from this machine (home, cache or working directory, Python prefix), so
the file is the same wherever it is generated with the same Python; argparse's layout
changes between Python versions, and the file names the version that wrote it.
"""

import argparse
import difflib
import functools
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "cli.md"
REGENERATE = "python scripts/make_cli_docs.py"
WIDTH = 100  # columns of the help text, as if COLUMNS=102
PYTHON = "{}.{}".format(*sys.version_info[:2])
INTRO = ("Generated from the parser in `deepdream_onnx/cli/` by `{regenerate}` (argparse of Python {python}); "
         "do not edit it by hand: change the parser, then rerun that command.")


def commands(parser):
    """[(name, one-line help, parser)] of the subcommands, in the parser's order."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {a.dest: a.help for a in sub._choices_actions}
    return [(name, helps.get(name), p) for name, p in sub.choices.items()]


def help_text(parser):
    """parser's --help, WIDTH columns wide."""
    parser.formatter_class = functools.partial(parser.formatter_class, width=WIDTH)
    return parser.format_help().rstrip()


def render():
    """docs/cli.md's text."""
    from deepdream_onnx.cli.main import build_parser

    parser = build_parser()
    subs = commands(parser)
    lines = [f"# {parser.prog}: the command line", "",
             INTRO.format(regenerate=REGENERATE, python=PYTHON), "",
             f"[{parser.prog}](#{_anchor(parser.prog)}) (`--help`, `--version`) and its commands:", ""]
    for name, brief, _ in subs:
        title = f"{parser.prog} {name}"
        lines.append(f"- [{name}](#{_anchor(title)}): {brief}")
    for title, brief, p in [(parser.prog, None, parser)] + [(f"{parser.prog} {n}", b, p) for n, b, p in subs]:
        lines += ["", f"## {title}", ""]
        if brief:
            lines += [brief[:1].upper() + brief[1:] + ".", ""]
        lines += ["```text", help_text(p), "```"]
    text = "\n".join(lines) + "\n"
    check_no_environment(text)
    return text


def _anchor(title):
    """GitHub's anchor for a Markdown heading made of letters, digits, spaces and '-'."""
    return title.lower().replace(" ", "-")


def check_no_environment(text):
    """Refuse text that holds something of this machine, e.g. a default computed from $HOME."""
    from deepdream_onnx import paths

    found = [what for what, value in [
        ("the home directory", str(Path.home())),
        ("the cache directory", str(paths.cache_dir())),
        ("the working directory", os.getcwd()),
        ("the Python prefix", sys.prefix),
        ("the repository path", str(REPO)),
    ] if len(value) > 1 and value in text]
    if found:
        raise SystemExit(f"make_cli_docs.py: the help text holds {', '.join(found)}; make that default "
                         "a description (e.g. 'default: the user cache') in the parser")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="make_cli_docs.py", description="Write docs/cli.md from the parser.")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if docs/cli.md differs from what would be written")
    args = parser.parse_args(argv)
    text = render()
    if not args.check:
        DOC.parent.mkdir(exist_ok=True)
        DOC.write_text(text, encoding="utf-8")
        print(f"wrote {DOC.relative_to(REPO)}")
        return 0
    old = DOC.read_text(encoding="utf-8") if DOC.is_file() else ""
    if old == text:
        print(f"{DOC.relative_to(REPO)} is up to date")
        return 0
    diff = difflib.unified_diff(old.splitlines(), text.splitlines(), "docs/cli.md", "the parser's help", lineterm="", n=1)
    print("\n".join(list(diff)[:40]), file=sys.stderr)
    print(f"{DOC.relative_to(REPO)} is stale; regenerate it: {REGENERATE}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    # Lets the script run from a checkout that was never pip-installed.
    sys.path.insert(0, str(REPO))
    sys.exit(main())
