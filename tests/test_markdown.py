"""app.markdown: which lines of model text both chat UIs render as code."""

from __future__ import annotations

from app.markdown import code_lines, fence_after, starts_with_marker


def test_fenced_blocks_with_their_fences_are_code():
    text = "Use:\n```python\nx = [1]\n```\nDone\n~~~~\n```\n~~~~\nafter"
    assert code_lines(text) == [False, True, True, True, False, True, True, True, False]


def test_an_unclosed_fence_runs_to_the_end():
    assert code_lines("a\n```\nb\nc") == [False, True, True, True]


def test_inline_triple_backticks_are_not_a_fence():
    assert code_lines("```print(1)```\n<b>") == [False, False]
    assert fence_after("```print(1)```", None) is None


def test_a_fence_closes_only_with_as_many_of_its_character():
    assert fence_after("````", None) == "````"
    assert fence_after("```", "````") == "````"  # too short: still open
    assert fence_after("~~~~", "````") == "````"  # the other character
    assert fence_after("`````  ", "````") is None
    assert fence_after("    ```", "```") == "```"  # indented four: content, not a fence


def test_indented_blocks_follow_a_blank_line():
    text = "para\n    not code\n\n    code\n    more\n\nafter\n\tcode?"
    assert code_lines(text) == [False, False, False, True, True, False, False, False]
    assert code_lines("    first line") == [True]


def test_comments_and_prompts_open_a_heading_or_a_quotation():
    assert starts_with_marker(">>> x = 1") and starts_with_marker("# a comment")
    assert starts_with_marker("   # three spaces")
    assert not starts_with_marker("    # four: indented code") and not starts_with_marker("a # b")
    assert not starts_with_marker("")
