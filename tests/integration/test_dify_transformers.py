"""Dify's own request shapes: the python3 code node and the jinja2 template node, end to end.

The scripts are built the way Dify builds them (`api/core/helper/code_executor/python3/python3_transformer.py`,
`jinja2/jinja2_transformer.py` and `template_transformer.py` in langgenius/dify, after the dify#26818 fix),
and the response is read back the way Dify reads it (`code_executor.py`: code, then data.error, then stdout;
a greedy DOTALL regex between the result markers).
"""

from __future__ import annotations

import json
import textwrap

import jinja2
import pytest

from ..dify_scripts import (
    JINJA2_PRELOAD,
    PYTHON3_DEFAULT_CODE,
    dify_execute,
    extract_result,
    jinja2_script,
    python3_script,
)

pytestmark = pytest.mark.integration


def test_python3_default_template(server):
    """Dify's default code node with arg1/arg2 returns {"result": "HelloWorld"}."""
    stdout = dify_execute(server, python3_script(PYTHON3_DEFAULT_CODE, {"arg1": "Hello", "arg2": "World"}))
    assert stdout == '<<RESULT>>{\n    "result": "HelloWorld"\n}<<RESULT>>\n'
    assert json.loads(extract_result(stdout)) == {"result": "HelloWorld"}


def test_python3_node_round_trips_cjk_and_emoji(server):
    """Non-ASCII inputs (CJK, emoji, quotes, newlines) survive base64 → main(**inputs) → json.dumps → markers."""
    code = textwrap.dedent(
        """
        def main(arg1: str, arg2: dict) -> dict:
            return {"echo": arg1, "nested": arg2, "length": len(arg1), "upper": arg1.upper()}
        """
    )
    arg1 = "你好，世界 🌏🎉 «ß» \"quoted\" 'single' \\ back\nnew line"  # noqa: RUF001 - CJK punctuation on purpose
    arg2 = {"键": ["值", 1, 2.5, None, True], "emoji": "👩‍💻"}
    stdout = dify_execute(server, python3_script(code, {"arg1": arg1, "arg2": arg2}))
    expected = {"echo": arg1, "nested": arg2, "length": len(arg1), "upper": arg1.upper()}
    assert stdout == f"<<RESULT>>{json.dumps(expected, indent=4)}<<RESULT>>\n"
    assert json.loads(extract_result(stdout)) == expected


def test_jinja2_official_case_with_preload(server):
    """Dify's jinja2 test: raw runner + preload gives exactly "<<RESULT>>Hello World<<RESULT>>\\n"."""
    stdout = dify_execute(server, jinja2_script("Hello {{template}}", {"template": "World"}), JINJA2_PRELOAD)
    assert stdout == "<<RESULT>>Hello World<<RESULT>>\n"


JINJA2_CASES = [
    pytest.param("你好 {{ name }} 🎉", {"name": "世界🌏"}, "你好 世界🌏 🎉", id="cjk-emoji"),
    pytest.param(
        "He said \"{{ q }}\" and '{{ q }}'",
        {"q": 'it\'s "fine"'},
        'He said "it\'s "fine"" and \'it\'s "fine"\'',
        id="quotes",
    ),
    pytest.param("'''{{ x }}''' \"\"\"{{ x }}\"\"\"", {"x": "t"}, "'''t''' \"\"\"t\"\"\"", id="triple-quotes"),
    pytest.param(
        '<div class="a">{{ x }}</div>\n<p>&amp; <b>{{ y }}</b></p>',
        {"x": "<i>raw</i>", "y": "&"},
        '<div class="a"><i>raw</i></div>\n<p>&amp; <b>&</b></p>',
        id="html",
    ),
    pytest.param(
        "{% for item in items %}- {{ loop.index }}. {{ item }}\n{% endfor %}\\n is not a newline",
        {"items": ["α", "β"]},  # noqa: RUF001 - Greek on purpose
        "- 1. α\n- 2. β\n\\n is not a newline",  # noqa: RUF001 - Greek on purpose
        id="loop-backslash",
    ),
    pytest.param("line1\nline2\n", {}, "line1\nline2", id="trailing-newline-dropped"),
]


@pytest.mark.parametrize(("template", "inputs", "rendered"), JINJA2_CASES)
def test_jinja2_templates_render_byte_exact(server, template, inputs, rendered):
    """Templates with CJK, emoji, quotes, triple quotes, HTML and newlines render byte-exact (dify#26818)."""
    assert jinja2.Template(template).render(**inputs) == rendered  # the expectation itself is right
    stdout = dify_execute(server, jinja2_script(template, inputs), JINJA2_PRELOAD)
    assert stdout == f"<<RESULT>>{rendered}<<RESULT>>\n"
    assert extract_result(stdout) == rendered


def test_jinja2_preload_runs_harmlessly_when_enabled(restricted_server):
    """With ENABLE_PRELOAD=true Dify's jinja2 preload really runs, and the output is still exact."""
    stdout = dify_execute(
        restricted_server,
        jinja2_script("你好 {{ name }} 🎉", {"name": "世界🌏"}),
        JINJA2_PRELOAD,
        enable_network=False,
    )
    assert stdout == "<<RESULT>>你好 世界🌏 🎉<<RESULT>>\n"
