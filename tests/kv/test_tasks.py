"""The passkey prompt: key present once at the asked depth, within the token limit."""

import pytest

from jaxsys.kv import tasks


class CharTokenizer:
  """One token per character: lengths are easy to reason about."""

  def encode(self, text):
    return [ord(c) for c in text]

  def chat_prompt(self, text):
    return f"<user>{text}<end>"


def test_needle_depth_and_length():
  tok = CharTokenizer()
  for depth in (0.0, 0.5, 1.0):
    ids = tasks.passkey_prompt(tok, 48213, depth, 3000)
    text = "".join(map(chr, ids))
    assert len(ids) <= 3000 and len(ids) > 3000 - 2 * len(tasks.FILLER)
    assert text.count("The pass key is 48213.") == 1
    assert text.endswith("What is the pass key?<end>")
    at = text.index("The pass key is") / len(text)
    assert abs(at - depth) < 0.05, (depth, at)


def test_errors():
  with pytest.raises(ValueError, match="depth: expected a fraction in \\[0, 1\\], given 1.5"):
    tasks.passkey_text(1, 1.5, 3)
  with pytest.raises(ValueError, match="max_tokens: 20 is too small"):
    tasks.passkey_prompt(CharTokenizer(), 1, 0.5, 20)
