"""``sef interface``: inspect and check DER interface (introspection XML) files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.tree import Tree

from sef.interface import (
    EMITS_CHANGED,
    NO_REPLY,
    Arg,
    Interface,
    InterfaceError,
    Method,
    Node,
    Property,
    Signal,
    load_file,
)

app = typer.Typer(
    help="Check and inspect DER interface definitions (D-Bus/AllJoyn introspection XML).",
    no_args_is_help=True,
)


@app.callback()
def _main() -> None:
    """Check and inspect DER interface definitions (D-Bus/AllJoyn introspection XML)."""


def _args(args: tuple[Arg, ...]) -> str:
    return ", ".join(f"{escape(a.name or '_')}: [cyan]{escape(a.type)}[/]" for a in args)


def _notes(annotations: dict[str, str]) -> str:
    if not annotations:
        return ""
    return "  " + " ".join(f"[dim]@{escape(k)}={escape(v)}[/]" for k, v in annotations.items())


def _short_annotations(obj: Method | Property | Signal | Interface) -> dict[str, str]:
    """Annotations not already shown as 'no reply' / 'emits_changed', with short names."""
    return {
        a.name.rsplit(".", 1)[-1]: a.value
        for a in obj.annotations
        if a.name not in (NO_REPLY, EMITS_CHANGED)
    }


def _method_label(m: Method) -> str:
    out = f" -> ({_args(m.out_args)})" if m.out_args else ""
    sig = f"[dim]'{escape(m.in_signature)}' -> '{escape(m.out_signature)}'[/]"
    reply = "  [magenta]no reply[/]" if m.no_reply else ""
    return (
        f"[bold]method[/] [green]{escape(m.name)}[/]({_args(m.in_args)}){out}  {sig}{reply}"
        f"{_notes(_short_annotations(m))}"
    )


def _property_label(p: Property) -> str:
    return (
        f"[bold]property[/] [green]{escape(p.name)}[/]: [cyan]{escape(p.type)}[/]  "
        f"access={p.access}  emits_changed={p.emits_changed}"
        f"{_notes(_short_annotations(p))}"
    )


def _signal_label(s: Signal) -> str:
    return (
        f"[bold]signal[/] [green]{escape(s.name)}[/]({_args(s.args)})  "
        f"[dim]'{escape(s.signature)}'[/]{_notes(_short_annotations(s))}"
    )


def _add_description(tree: Tree, description: str | None) -> None:
    if description:
        tree.add(f"[italic dim]{escape(description)}[/]")


def _add_node(tree: Tree, node: Node) -> None:
    for iface in node.interfaces.values():
        branch = tree.add(
            f"[bold]interface[/] [yellow]{escape(iface.name)}[/]{_notes(_short_annotations(iface))}"
        )
        _add_description(branch, iface.description)
        for m in iface.methods.values():
            _add_description(branch.add(_method_label(m)), m.description)
        for p in iface.properties.values():
            _add_description(branch.add(_property_label(p)), p.description)
        for s in iface.signals.values():
            _add_description(branch.add(_signal_label(s)), s.description)
    for child in node.children:
        _add_node(tree.add(f"[bold]node[/] {escape(child.name or '?')}"), child)


def _count(node: Node) -> tuple[int, int, int, int]:
    totals = [
        len(node.interfaces),
        sum(len(i.methods) for i in node.interfaces.values()),
        sum(len(i.properties) for i in node.interfaces.values()),
        sum(len(i.signals) for i in node.interfaces.values()),
    ]
    for child in node.children:
        for k, v in enumerate(_count(child)):
            totals[k] += v
    return totals[0], totals[1], totals[2], totals[3]


def _plural(n: int, word: str) -> str:
    if n == 1:
        return f"{n} {word}"
    return f"{n} {word[:-1]}ies" if word.endswith("y") else f"{n} {word}s"


@app.command("check")
def check(
    file: Annotated[Path, typer.Argument(help="Interface XML file to check.")],
) -> None:
    """Validate an interface XML file and print its members.

    Exits 0 if the file is valid, 1 (with ``file:line: message``) otherwise.
    """
    out = Console(highlight=False)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        node = load_file(file)
    except InterfaceError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}")
        raise typer.Exit(1) from None
    except OSError as exc:
        reason = exc.strerror or str(exc)
        err.print(f"[red]error:[/] {escape(str(file))}: cannot read file: {escape(reason)}")
        raise typer.Exit(1) from None
    root = Tree(
        f"[bold]{escape(str(file))}[/]" + (f"  node {escape(node.name)}" if node.name else "")
    )
    _add_node(root, node)
    out.print(root)
    n_if, n_m, n_p, n_s = _count(node)
    out.print(
        f"[green]OK[/]: {_plural(n_if, 'interface')}, {_plural(n_m, 'method')}, "
        f"{_plural(n_p, 'property')}, {_plural(n_s, 'signal')}"
    )
