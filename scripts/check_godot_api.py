#!/usr/bin/env python3
"""Check that the Godot plugin only uses engine classes, methods, properties and signals that exist.

gdtoolkit checks syntax, not API names (``EditorInterface.get_resoruce_filesystem()`` parses
fine). This script reads the GDScript of an add-on, works out the type of every receiver it can
(typed ``var``/parameters, ``X.new()``, literals, ``preload``-ed scripts, ``Array[T]`` loops) and
looks each ``receiver.member``, bare call, bare constant, ``extends`` and ``_virtual`` override
up in the Godot API data vendored in ``plugins/godot/api/``:

1. ``godot-api-4.7-symbols.json`` (names per class; no parents, no virtuals, no enum values);
2. ``classes/*.xml`` (full class reference for a few classes, with ``inherits``);
3. the short allow-list below, for what neither covers (each entry says why).

A member access on the result of a call (``a.b().c``) cannot be typed and is reported: assign
the result to a typed variable. Exit status 1 and one line per problem when anything is unknown.

    .venv/bin/python scripts/check_godot_api.py [ADDON_DIR] [--api-dir plugins/godot/api]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import xml.etree.ElementTree as ET  # noqa: S405 - vendored, trusted class-reference files
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ADDON = ROOT / "plugins/godot/addons/ai_assets_toolbox"
DEFAULT_API = ROOT / "plugins/godot/api"

# Parents of the classes we use; the symbol table has no parent links and only a few classes
# have XML here (values from the Godot 4.4 class reference, "Inherits:" lines).
INHERITS = {
    "Node": "Object", "RefCounted": "Object", "Resource": "RefCounted",
    "EditorPlugin": "Node", "EditorFileSystem": "Node", "EditorSettings": "Resource",
    "EditorContextMenuPlugin": "RefCounted", "HTTPRequest": "Node", "HTTPClient": "RefCounted",
    "SceneTree": "MainLoop", "MainLoop": "Object", "SceneTreeTimer": "RefCounted",
    "CanvasItem": "Node", "Control": "CanvasItem", "Container": "Control",
    "BoxContainer": "Container", "VBoxContainer": "BoxContainer", "HBoxContainer": "BoxContainer",
    "Label": "Control", "LineEdit": "Control", "BaseButton": "Control", "Button": "BaseButton",
    "CheckBox": "Button", "OptionButton": "Button", "Range": "Control", "SpinBox": "Range",
    "ProgressBar": "Range", "FileAccess": "RefCounted", "DirAccess": "RefCounted",
    "JSON": "Resource", "Texture2D": "Resource",
}

# Names that exist in Godot 4.4 but that neither the symbol table nor the XML files list.
ALLOW = {
    # virtual methods: the symbol table omits every "_" method
    "Node._enter_tree", "Node._exit_tree", "Node._ready", "Object._init",
    # enum values: the symbol table lists enum names only
    "HTTPClient.METHOD_GET", "HTTPClient.METHOD_POST", "HTTPRequest.RESULT_SUCCESS",
    "Control.SIZE_EXPAND_FILL",
    # properties whose accessors are not named set_<property> (set_h_size_flags)
    "Control.size_flags_horizontal",
    # classes with an empty entry in the symbol table and no XML here
    "Label.text", "Label.clip_text", "Button.text",
    "DirAccess.make_dir_recursive_absolute", "DirAccess.rename_absolute",
    "DirAccess.remove_absolute",
}
# Names the data lists but that are newer than the plugin's Godot 4.4 minimum
# (plugins/godot/api/classes/README.md and the 4.4 class reference).
NEWER_THAN_MINIMUM = {
    "EditorDock": "4.6",  # a Control subclass for docks; use add_control_to_dock
    "EditorContextMenuPlugin._get_menu_options": "4.6",  # 4.4/4.5 use _popup_menu
    "EditorInterface.get_editor_toaster": "4.5",  # not in the 4.3/4.4 references
}
# @GlobalScope enum values (the symbol table lists only its INT*_MAX constants).
GLOBAL_CONSTANTS = {"OK", "PROPERTY_HINT_PASSWORD", "TYPE_STRING", "TYPE_FLOAT", "TYPE_BOOL"}
# Methods of Variant types (String, Array...), absent from the symbol table; only these may be used.
BUILTIN_MEMBERS = {
    "String": {"get_extension", "get_basename", "get_file", "to_lower", "uri_encode", "rstrip",
               "begins_with", "left", "path_join", "trim_suffix", "is_empty",
               "get_string_from_utf8"},
    "Array": {"append", "erase", "clear", "size", "find", "is_empty", "has"},
    "Dictionary": {"get", "duplicate", "has", "keys"},
    "PackedStringArray": {"append", "is_empty", "size", "has"},
    "PackedByteArray": {"is_empty", "size", "get_string_from_utf8"},
    "Callable": {"call"},
}
STRING_TO_STRING = {"get_extension", "get_basename", "get_file", "to_lower", "uri_encode", "rstrip",
                    "left", "path_join", "trim_suffix"}
BUILTIN_TYPES = set(BUILTIN_MEMBERS) | {"int", "float", "bool", "Variant", "void", "Vector2"}
KEYWORDS = {"if", "elif", "for", "while", "match", "return", "await", "not", "and", "or", "in",
            "func", "super", "is", "as", "var", "const", "signal", "extends", "static"}
LITERAL_TYPES = {'"': "String", "{": "Dictionary", "[": "Array", "f": "Callable"}


@dataclass
class Api:
    """Members per class from the JSON symbol table and the XML files."""

    members: dict[str, set[str]] = field(default_factory=dict)
    parents: dict[str, str] = field(default_factory=lambda: dict(INHERITS))
    signals: dict[str, set[str]] = field(default_factory=dict)

    @classmethod
    def load(cls, api_dir: Path) -> Api:
        api = cls()
        data = json.loads((api_dir / "godot-api-4.7-symbols.json").read_text())["classes"]
        for name, entry in data.items():
            api.members[name] = {m for kind in entry.values() for m in kind}
            api.signals[name] = set(entry.get("signals", []))
        for xml in sorted((api_dir / "classes").glob("*.xml")):
            root = ET.parse(xml).getroot()  # noqa: S314
            name = root.get("name", "")
            names = {el.get("name", "") for el in root.iter()
                     if el.tag in ("method", "member", "signal", "constant")}
            api.members.setdefault(name, set()).update(names)
            api.signals.setdefault(name, set()).update(
                el.get("name", "") for el in root.iter("signal"))
            if root.get("inherits"):
                api.parents[name] = root.get("inherits", "")
        return api

    def is_class(self, name: str) -> bool:
        return name in self.members

    def lineage(self, name: str) -> list[str]:
        out = [name]
        while out[-1] in self.parents:
            out.append(self.parents[out[-1]])
        return out

    def find(self, cls: str, member: str) -> str | None:
        """``"signal" | "other"`` (``"new"`` for constructors) when ``cls`` or a parent has
        ``member``; None when nothing lists it."""
        for owner in self.lineage(cls):
            names = self.members.get(owner, set())
            if member in self.signals.get(owner, set()):
                return "signal"
            if member in names or f"{owner}.{member}" in ALLOW:
                return "other"
            if {f"set_{member}", f"get_{member}", f"is_{member}"} & names:
                return "other"
        return "new" if member == "new" else None


@dataclass
class Script:
    """What one .gd file declares: its base, script consts, members, variable types."""

    path: Path
    extends: str = ""
    scripts: dict[str, str] = field(default_factory=dict)  # const Name := preload("x.gd")
    funcs: dict[str, str] = field(default_factory=dict)  # name -> return type ('' if none)
    own: set[str] = field(default_factory=set)  # vars, consts, signals
    types: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def clean(source: str) -> str:
    """Blank out comments and the insides of string literals, keeping line numbers."""
    out, i, quote = [], 0, ""
    while i < len(source):
        ch = source[i]
        if quote:
            if ch == "\\":
                out.append("  ")
                i += 2
                continue
            out.append(ch if ch in (quote, "\n") else " ")
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
            out.append(ch)
        elif ch == "#":
            while i < len(source) and source[i] != "\n":
                i += 1
            continue
        else:
            out.append(ch)
        i += 1
    return "".join(out)


DECL = re.compile(r"\b(?:var|const)\s+(\w+)\s*(?::\s*([\w\[\]]+))?\s*(:?=)?\s*(\S?)(\w*)")
PARAM = re.compile(r"(\w+)\s*:\s*([A-Za-z_][\w\[\]]*)")
FUNC = re.compile(r"^\s*(?:static\s+)?func\s+(\w+)\s*\(([^)]*)\)\s*(?:->\s*([\w\[\]]+))?", re.M)


def _base_type(name: str) -> str:
    return name.split("[", 1)[0]


def _infer(word: str, rest: str) -> str:
    """Type of ``var x := <word><rest>`` when obvious: a literal, ``T(...)`` or ``T.new()``."""
    if word[:1].isupper():
        return word if rest.startswith(("(", ".new(")) else ""
    if word[:1].isdigit():
        return "float" if rest.startswith(".") else "int"
    if word == "func":
        return "Callable"
    return LITERAL_TYPES.get(word[:1], "") if word[:1] in "\"{[" else ""


def _chain(line: str, pos: int) -> list[tuple[str, bool]]:
    """``[(member, called), ...]`` for ``.a(...).b.c()`` starting at ``line[pos]``."""
    out: list[tuple[str, bool]] = []
    while True:
        m = re.compile(r"\.([A-Za-z_]\w*)\s*").match(line, pos)
        if not m:
            return out
        pos, called = m.end(), line.startswith("(", m.end())
        if called:
            depth = 0
            for pos in range(m.end(), len(line)):  # noqa: B007 - pos is used after the loop
                depth += {"(": 1, ")": -1}.get(line[pos], 0)
                if depth == 0:
                    break
            pos += 1
        out.append((m.group(1), called))


def _declare(script: Script, name: str, type_name: str, lineno: int) -> None:
    old = script.types.get(name)
    if old and old != type_name:
        script.problems.append(f"{script.path.name}:{lineno}: variable {name!r} has two types "
                               f"({old}, {type_name}); rename one so it can be checked")
    script.types[name] = type_name


def read_script(path: Path) -> tuple[Script, str]:
    raw = path.read_text()
    script = Script(path)
    for name, target in re.findall(r'const\s+(\w+)\s*:?=\s*preload\("([^"]+)"\)', raw):
        script.scripts[name] = str((path.parent / target).resolve())
    text = clean(raw)
    match = re.search(r"^extends\s+(\w+)", text, re.M)
    script.extends = match.group(1) if match else "RefCounted"
    for m in FUNC.finditer(text):
        script.funcs[m.group(1)] = m.group(3) or ""
        lineno = text.count("\n", 0, m.start()) + 1
        for pname, ptype in PARAM.findall(m.group(2)):
            _declare(script, pname, ptype, lineno)
    script.own |= set(re.findall(r"^signal\s+(\w+)", text, re.M))
    for lineno, line in enumerate(text.splitlines(), 1):
        for m in DECL.finditer(line):
            name, declared, op = m.group(1), m.group(2), m.group(3)
            if name in script.scripts:
                continue
            script.own.add(name)
            inferred = declared or (_infer(m.group(4) + m.group(5), line[m.end():])
                                    if op == ":=" and m.group(4) else "")
            if inferred:
                _declare(script, name, inferred, lineno)
        for var, elem in re.findall(r"\bfor\s+(\w+)\s+in\s+(\w+)\b", line):
            array_type = script.types.get(elem, "")
            if "[" in array_type:
                _declare(script, var, array_type.split("[", 1)[1].rstrip("]"), lineno)
    return script, text


class Checker:
    def __init__(self, api: Api, scripts: dict[str, tuple[Script, str]]) -> None:
        self.api, self.scripts, self.problems = api, scripts, []
        self.checked = 0  # engine/builtin names looked up (proves the check is not vacuous)

    def script_by_path(self, path: str) -> Script | None:
        entry = self.scripts.get(path)
        return entry[0] if entry else None

    def resolve(self, script: Script, type_name: str, member: str) -> str | None:
        """``kind`` of ``type_name.member`` or None; type_name may be a script const."""
        type_name = _base_type(type_name)
        if type_name in script.scripts:
            other = self.script_by_path(script.scripts[type_name])
            if other is None:
                return "other"
            if member in other.own or member in other.funcs:
                return "signal" if re.search(rf"^signal\s+{member}\b",
                                             self.scripts[str(other.path)][1], re.M) else "other"
            return self.resolve(other, other.extends, member) or ("new" if member == "new"
                                                                   else None)
        if type_name in BUILTIN_MEMBERS:
            return "other" if member in BUILTIN_MEMBERS[type_name] else None
        return self.api.find(type_name, member)

    def type_of(self, script: Script, name: str) -> str:
        if name == "self":
            return script.extends
        if name in script.types:
            return script.types[name]
        if name in script.scripts or self.api.is_class(name) or name in BUILTIN_TYPES:
            return name
        return ""

    def check(self, script: Script, text: str) -> None:
        where = script.path.name
        self.problems += script.problems
        if not self.api.is_class(script.extends):
            self.problems.append(f"{where}: extends unknown class {script.extends}")
        for lineno, line in enumerate(text.splitlines(), 1):
            self._check_types(script, line, f"{where}:{lineno}")
            self._check_access(script, line, f"{where}:{lineno}")
            self._check_bare(script, line, f"{where}:{lineno}")
        for name in script.funcs:
            for owner in self.api.lineage(script.extends):
                self._too_new(f"{owner}.{name}", where)
            if name.startswith("_") and len(re.findall(rf"\b{name}\b", text)) == 1 and \
                    not self.resolve(script, script.extends, name):
                self.problems.append(f"{where}: {name}() overrides nothing in {script.extends}")

    def _too_new(self, name: str, where: str) -> None:
        if name in NEWER_THAN_MINIMUM:
            self.problems.append(f"{where}: {name} needs Godot {NEWER_THAN_MINIMUM[name]}; the "
                                 "plugin supports Godot 4.4")

    def _check_types(self, script: Script, line: str, where: str) -> None:
        for type_name in re.findall(r"(?::|->|\bextends)\s*([A-Z]\w*)", line):
            self._too_new(type_name, where)
            if not self.type_of(script, type_name):
                self.problems.append(f"{where}: unknown type {type_name}")

    def _check_access(self, script: Script, line: str, where: str) -> None:
        for m in re.finditer(r"(?<![\w.\])\"'])([A-Za-z_]\w*)(?=\.[A-Za-z_])", line):
            type_name = self.type_of(script, m.group(1))
            if not type_name:
                continue
            chain = _chain(line, m.end())
            for index, (member, called) in enumerate(chain):
                kind = self.resolve(script, type_name, member)
                self.checked += 1
                self._too_new(f"{_base_type(type_name)}.{member}", where)
                if kind is None:
                    self.problems.append(f"{where}: {_base_type(type_name)}.{member} is not in "
                                         "the Godot API data")
                    break
                if index + 1 == len(chain):
                    break
                if kind == "signal":
                    type_name = "Signal"
                elif called and self._return_type(script, type_name, member):
                    type_name = self._return_type(script, type_name, member)
                elif called:
                    self.problems.append(f"{where}: cannot check .{chain[index + 1][0]} on the "
                                         f"result of {member}(): assign it to a typed variable")
                    break
                else:
                    type_name = self._member_type(script, type_name, member)
                    if not type_name:
                        break

    def _return_type(self, script: Script, type_name: str, member: str) -> str:
        if type_name == "String" and member in STRING_TO_STRING:
            return "String"
        other = self.script_by_path(script.scripts.get(type_name, ""))
        return other.funcs.get(member, "") if other else ""

    def _member_type(self, script: Script, type_name: str, member: str) -> str:
        other = self.script_by_path(script.scripts.get(type_name, ""))
        return other.types.get(member, "") if other else ""

    def _check_bare(self, script: Script, line: str, where: str) -> None:
        if re.match(r"\s*(?:static\s+)?func\b|\s*signal\b", line):
            line = line.split("(", 1)[1] if "(" in line else ""
        for name in re.findall(r"(?<![\w.$@])([A-Za-z_]\w*)\s*\(", line):
            if name in KEYWORDS or name in script.funcs or name in BUILTIN_TYPES:
                continue
            if name in script.scripts or self.api.is_class(name):
                continue
            if name in self.api.members.get("@GlobalScope", set()) | \
                    self.api.members.get("@GDScript", set()):
                continue
            if not self.resolve(script, script.extends, name):
                self.problems.append(f"{where}: {name}() is neither defined here nor a method "
                                     f"of {script.extends} or a global function")
        for name in re.findall(r"(?<![\w.$@\"])([A-Z][A-Z0-9_]{2,})\b(?!\s*[:(])", line):
            if name in script.own or name in GLOBAL_CONSTANTS or self.api.is_class(name):
                continue
            if not self.resolve(script, script.extends, name):
                self.problems.append(f"{where}: constant {name} is unknown")


def check(addon: Path, api_dir: Path = DEFAULT_API) -> Checker:
    """Check every ``*.gd`` file of the add-on; ``.problems`` is empty when all names exist."""
    api = Api.load(api_dir)
    scripts = {str(p.resolve()): read_script(p) for p in sorted(addon.rglob("*.gd"))}
    checker = Checker(api, scripts)
    for script, text in scripts.values():
        checker.check(script, text)
    return checker


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("addon", nargs="?", type=Path, default=DEFAULT_ADDON)
    parser.add_argument("--api-dir", type=Path, default=DEFAULT_API)
    args = parser.parse_args(argv)
    result = check(args.addon, args.api_dir)
    for line in result.problems:
        print(line)  # noqa: T201 - a command-line report
    print(f"{len(result.scripts)} scripts, {result.checked} member references checked, "  # noqa: T201
          f"{len(result.problems)} problem(s)")
    return 1 if result.problems else 0


if __name__ == "__main__":
    sys.exit(main())
