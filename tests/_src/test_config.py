"""Config loading: good files load; every kind of mistake names file, line and key."""

import dataclasses
import textwrap
from typing import Literal, Optional

import pytest

from jaxsys._src.config import ConfigError, config_to_dict, load_config


@dataclasses.dataclass(frozen=True)
class Model:
  layers: int
  dtype: Literal["float32", "bfloat16"] = "float32"


@dataclasses.dataclass(frozen=True)
class Cfg:
  name: str
  budgets: tuple[int, ...]
  lr: float
  model: Model
  pair: tuple[int, str] = (1, "a")
  enabled: bool = True
  seed: Optional[int] = None
  weights: dict[str, float] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    if any(b <= 0 for b in self.budgets):
      raise ValueError(f"budgets must be positive, given {self.budgets}")


GOOD = """\
# python benchmarks/demo.py --config THIS  (about 1 minute)
name: demo
budgets: [64, 128]
lr: 1
model:
  layers: 2
  dtype: bfloat16
weights: {a: 0.5}
"""


def write(tmp_path, text):
  path = tmp_path / "cfg.yaml"
  path.write_text(textwrap.dedent(text))
  return path


def test_good_file_loads_with_conversions(tmp_path):
  cfg = load_config(write(tmp_path, GOOD), Cfg)
  assert cfg == Cfg(
      name="demo", budgets=(64, 128), lr=1.0, model=Model(2, "bfloat16"),
      weights={"a": 0.5},
  )
  assert isinstance(cfg.lr, float)  # int widened to float
  assert isinstance(cfg.budgets, tuple)  # YAML list stored as a tuple
  assert config_to_dict(cfg)["budgets"] == [64, 128]


@pytest.mark.parametrize(
    "edit, fragments",
    [
        # unknown key: file, line, key, and the valid keys
        (GOOD + "budget: 3\n", ["cfg.yaml:9", "'budget'", "unknown key", "budgets", "lr"]),
        # unknown nested key reports the nested path and the nested class's keys
        (GOOD.replace("layers: 2", "layer: 2"), ["cfg.yaml:6", "'model.layer'", "valid keys of Model: dtype, layers"]),
        # missing required key
        (GOOD.replace("lr: 1\n", ""), ["'lr'", "missing", "expected float", "required keys of Cfg"]),
        # wrong type: what was expected and what was given
        (GOOD.replace("lr: 1", "lr: fast"), ["cfg.yaml:4", "'lr'", "expected float", "'fast' (str)"]),
        # a bool is not an int
        (GOOD.replace("layers: 2", "layers: true"), ["cfg.yaml:6", "'model.layers'", "expected int", "True (bool)"]),
        # list item of the wrong type names the index and its line
        (GOOD.replace("[64, 128]", "[64, x]"), ["cfg.yaml:3", "'budgets.1'", "expected int", "'x' (str)"]),
        # literal outside its choices
        (GOOD.replace("bfloat16", "float8"), ["cfg.yaml:7", "'model.dtype'", "one of ['float32', 'bfloat16']"]),
        # fixed-length tuple with the wrong length
        (GOOD + "pair: [1]\n", ["'pair'", "2 items", "given 1 items"]),
        # the dataclass's own validation
        (GOOD.replace("[64, 128]", "[64, -1]"), ["invalid Cfg", "budgets must be positive"]),
        # a scalar where a mapping is needed
        (GOOD.replace("model:\n  layers: 2\n  dtype: bfloat16\n", "model: 3\n"), ["'model'", "expected a mapping of Model fields"]),
    ],
)
def test_mistakes_are_named(tmp_path, edit, fragments):
  with pytest.raises(ConfigError) as info:
    load_config(write(tmp_path, edit), Cfg)
  message = str(info.value)
  assert str(tmp_path / "cfg.yaml") in message
  for fragment in fragments:
    assert fragment in message, f"{fragment!r} not in {message!r}"


def test_optional_accepts_null_and_value(tmp_path):
  assert load_config(write(tmp_path, GOOD + "seed: null\n"), Cfg).seed is None
  assert load_config(write(tmp_path, GOOD + "seed: 7\n"), Cfg).seed == 7
  with pytest.raises(ConfigError, match="expected Optional\\[int\\]|int \\| None"):
    load_config(write(tmp_path, GOOD + "seed: 1.5\n"), Cfg)


def test_missing_file_and_bad_yaml(tmp_path):
  with pytest.raises(ConfigError, match="cannot read config file"):
    load_config(tmp_path / "nope.yaml", Cfg)
  with pytest.raises(ConfigError, match="not valid YAML"):
    load_config(write(tmp_path, "a: [1, 2\n"), Cfg)


def test_cls_must_be_a_dataclass(tmp_path):
  with pytest.raises(TypeError, match="must be a dataclass"):
    load_config(write(tmp_path, GOOD), dict)
