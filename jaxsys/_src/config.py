"""Load YAML files into frozen dataclasses, with errors that say what went wrong.

A benchmark declares its settings as a frozen dataclass; its YAML files fill it.
Every key of the file must be a field, every field without a default must be in the
file, and every value must have the field's type. A mistake raises `ConfigError`
naming the file, the line, the key, what was expected and what was given::

    @dataclasses.dataclass(frozen=True)
    class Config:
      budgets: tuple[int, ...]
      context: int = 2048

    cfg = load_config("configs/kv_cache/smoke.yaml", Config)

Supported field types: ``bool``, ``int``, ``float`` (an int is accepted and widened),
``str``, ``tuple[T, ...]``, ``tuple[A, B]``, ``list[T]`` (stored as a tuple, so the
config stays hashable and usable as a static jit argument), ``dict[str, T]``,
``Optional[T]`` / ``T | None``, ``Literal[...]`` and nested frozen dataclasses.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from typing import Any, Literal, TypeVar, Union

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
  """A config file does not match its dataclass."""


def _type_name(tp: Any) -> str:
  if tp is type(None):
    return "null"
  if isinstance(tp, type) and not typing.get_args(tp):
    return tp.__name__
  return str(tp).replace("typing.", "")


def _given(value: Any) -> str:
  text = repr(value)
  if len(text) > 60:
    text = text[:57] + "..."
  return f"{text} ({type(value).__name__})"


class _Where:
  """Maps a key path such as ``("model", "layers")`` to its line in the file."""

  def __init__(self, path: str, text: str):
    self.path = path
    self.lines: dict[tuple[Any, ...], int] = {}
    try:
      node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
      node = None
    if node is not None:
      self._walk(node, ())

  def _walk(self, node: yaml.Node, prefix: tuple[Any, ...]) -> None:
    if isinstance(node, yaml.MappingNode):
      for key_node, value_node in node.value:
        key = (*prefix, key_node.value)
        self.lines[key] = key_node.start_mark.line + 1
        self._walk(value_node, key)
    elif isinstance(node, yaml.SequenceNode):
      for i, item in enumerate(node.value):
        self.lines[(*prefix, i)] = item.start_mark.line + 1
        self._walk(item, (*prefix, i))

  def error(self, key: tuple[Any, ...], message: str) -> ConfigError:
    line = None
    for depth in range(len(key), 0, -1):
      line = self.lines.get(tuple(key[:depth]))
      if line is not None:
        break
    loc = f"{self.path}:{line}" if line is not None else self.path
    dotted = ".".join(str(k) for k in key) if key else "<top level>"
    return ConfigError(f"{loc}: key '{dotted}': {message}")


def _convert(value: Any, tp: Any, key: tuple[Any, ...], where: _Where) -> Any:
  """Checks `value` against the type `tp` and returns it in the field's form."""
  origin = typing.get_origin(tp)
  args = typing.get_args(tp)

  if tp is Any:
    return value
  if dataclasses.is_dataclass(tp):
    return _build(value, tp, key, where)
  if origin in (Union, types.UnionType):
    errors = []
    for option in args:
      try:
        return _convert(value, option, key, where)
      except ConfigError as e:
        errors.append(e)
    raise where.error(key, f"expected {_type_name(tp)}, given {_given(value)}")
  if tp is type(None):
    if value is None:
      return None
    raise where.error(key, f"expected null, given {_given(value)}")
  if origin is Literal:
    if value in args and type(value) in {type(a) for a in args}:
      return value
    raise where.error(
        key, f"expected one of {list(args)}, given {_given(value)}"
    )
  if tp is bool:
    if isinstance(value, bool):
      return value
    raise where.error(key, f"expected bool, given {_given(value)}")
  if tp is int:
    if isinstance(value, int) and not isinstance(value, bool):
      return value
    raise where.error(key, f"expected int, given {_given(value)}")
  if tp is float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
      return float(value)
    raise where.error(key, f"expected float, given {_given(value)}")
  if tp is str:
    if isinstance(value, str):
      return value
    raise where.error(key, f"expected str, given {_given(value)}")
  if origin in (list, tuple):
    if not isinstance(value, list):
      raise where.error(
          key, f"expected a list for {_type_name(tp)}, given {_given(value)}"
      )
    if origin is tuple and args and args[-1] is not Ellipsis:
      if len(value) != len(args):
        raise where.error(
            key,
            f"expected a list of {len(args)} items for {_type_name(tp)},"
            f" given {len(value)} items",
        )
      item_types = args
    else:
      item_types = (args[0] if args else Any,) * len(value)
    return tuple(
        _convert(v, t, (*key, i), where)
        for i, (v, t) in enumerate(zip(value, item_types))
    )
  if origin is dict:
    if not isinstance(value, dict):
      raise where.error(key, f"expected a mapping, given {_given(value)}")
    key_type, value_type = args if args else (Any, Any)
    return {
        _convert(k, key_type, (*key, k), where): _convert(
            v, value_type, (*key, k), where
        )
        for k, v in value.items()
    }
  raise TypeError(
      f"config field '{'.'.join(map(str, key))}' has unsupported type"
      f" {_type_name(tp)}"
  )


def _build(data: Any, cls: type[T], prefix: tuple[Any, ...], where: _Where) -> T:
  if not isinstance(data, dict):
    raise where.error(
        prefix, f"expected a mapping of {cls.__name__} fields, given {_given(data)}"
    )
  fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
  hints = typing.get_type_hints(cls)
  valid = ", ".join(sorted(fields))
  for name in data:
    if name not in fields:
      raise where.error(
          (*prefix, name), f"unknown key; valid keys of {cls.__name__}: {valid}"
      )
  kwargs = {}
  for name, field in fields.items():
    if name not in data:
      has_default = (
          field.default is not dataclasses.MISSING
          or field.default_factory is not dataclasses.MISSING
      )
      if not has_default:
        raise where.error(
            (*prefix, name),
            f"missing; expected {_type_name(hints[name])} (required keys of"
            f" {cls.__name__}: "
            + ", ".join(
                n
                for n, f in fields.items()
                if f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING
            )
            + ")",
        )
      continue
    kwargs[name] = _convert(data[name], hints[name], (*prefix, name), where)
  try:
    return cls(**kwargs)
  except (TypeError, ValueError) as e:  # a __post_init__ that validates
    raise where.error(prefix, f"invalid {cls.__name__}: {e}") from e


def load_config(path: str | os.PathLike[str], cls: type[T]) -> T:
  """Loads a YAML file into the frozen dataclass `cls`.

  Args:
    path: the YAML file.
    cls: a dataclass type; its fields are the valid keys.

  Returns:
    An instance of `cls`.

  Raises:
    ConfigError: the file is missing, is not valid YAML, or does not match `cls`
      (unknown key, missing key, wrong type); the message names the file, line,
      key, what was expected and what was given.
  """
  if not dataclasses.is_dataclass(cls):
    raise TypeError(f"cls must be a dataclass type, given {cls!r}")
  path = os.fspath(path)
  try:
    with open(path, encoding="utf-8") as f:
      text = f.read()
  except OSError as e:
    raise ConfigError(f"{path}: cannot read config file: {e.strerror}") from e
  try:
    data = yaml.safe_load(text)
  except yaml.YAMLError as e:
    raise ConfigError(f"{path}: not valid YAML: {e}") from e
  if data is None:
    data = {}
  return _build(data, cls, (), _Where(path, text))


def config_to_dict(config: Any) -> dict[str, Any]:
  """A JSON-friendly dict of a config dataclass (tuples become lists)."""

  def plain(x: Any) -> Any:
    if isinstance(x, (tuple, list)):
      return [plain(v) for v in x]
    if isinstance(x, dict):
      return {k: plain(v) for k, v in x.items()}
    return x

  return plain(dataclasses.asdict(config))
