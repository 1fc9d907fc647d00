"""Dify's request shapes, built the way Dify builds them and read back the way Dify reads them.

From langgenius/dify `api/core/helper/code_executor/`: the python3, javascript and jinja2
transformers (`template_transformer.py`; the jinja2 template base64-encoded since dify#26818), and
`code_executor.py` for reading a response (code, then data.error, then stdout; a greedy DOTALL
regex between the result markers). Shared by the executor, integration and reliability tests.
"""

from __future__ import annotations

import base64
import json
import re
import textwrap
from typing import Any

RESULT_TAG = "<<RESULT>>"

PYTHON3_RUNNER = textwrap.dedent(
    """\
    {{code}}

    import json
    from base64 import b64decode

    # decode and prepare input dict
    inputs_obj = json.loads(b64decode('{{inputs}}').decode('utf-8'))

    # execute main function
    output_obj = main(**inputs_obj)

    # convert output to json and print
    output_json = json.dumps(output_obj, indent=4)
    result = f'''<<RESULT>>{output_json}<<RESULT>>'''
    print(result)
    """
)

JINJA2_RUNNER = textwrap.dedent(
    """
    import jinja2
    import json
    from base64 import b64decode

    # declare main function
    def main(**inputs):
        # Decode base64-encoded template to handle special characters safely
        template_code = b64decode('{{template_b64}}').decode('utf-8')
        template = jinja2.Template(template_code)
        return template.render(**inputs)

    # decode and prepare input dict
    inputs_obj = json.loads(b64decode('{{inputs}}').decode('utf-8'))

    # execute main function
    output = main(**inputs_obj)

    # convert output and print
    result = f'''<<RESULT>>{output}<<RESULT>>'''
    print(result)

    """
)

JINJA2_PRELOAD = textwrap.dedent(
    """
    import jinja2
    from base64 import b64decode

    def _jinja2_preload_():
        # prepare jinja2 environment, load template and render before to avoid sandbox issue
        template = jinja2.Template('{{s}}')
        template.render(s='a')

    if __name__ == '__main__':
        _jinja2_preload_()

    """
)

PYTHON3_DEFAULT_CODE = textwrap.dedent(
    """
    def main(arg1: str, arg2: str) -> dict:
        return {
            "result": arg1 + arg2,
        }
    """
)


def serialize_inputs(inputs: dict) -> str:
    """Dify: json.dumps(ensure_ascii=False), UTF-8, then base64."""
    return base64.b64encode(json.dumps(inputs, ensure_ascii=False).encode()).decode("utf-8")


def python3_script(code: str, inputs: dict) -> str:
    return PYTHON3_RUNNER.replace("{{code}}", code).replace("{{inputs}}", serialize_inputs(inputs))


def jinja2_script(template: str, inputs: dict) -> str:
    template_b64 = base64.b64encode(template.encode("utf-8")).decode("utf-8")
    return JINJA2_RUNNER.replace("{{template_b64}}", template_b64).replace("{{inputs}}", serialize_inputs(inputs))


def dify_execute(
    server: Any, code: str, preload: str = "", *, enable_network: bool = True, language: str = "python3"
) -> str:
    """What Dify's CodeExecutor.execute_code does with the response; returns stdout."""
    resp = server.run(code, language=language, preload=preload, enable_network=enable_network)
    assert resp.status_code == 200, f"Dify: Failed to execute code, got status code {resp.status_code}"
    body = resp.json()
    assert body["code"] == 0, f"Dify: Got error code: {body['code']}. Got error msg: {body['message']}"
    assert body["data"]["error"] == "", f"Dify would raise: {body['data']['error']}"
    return body["data"]["stdout"] or ""


def extract_result(stdout: str) -> str:
    match = re.search(rf"{RESULT_TAG}(.*){RESULT_TAG}", stdout, re.DOTALL)
    assert match, f"Dify: Failed to parse result from {stdout!r}"
    return match.group(1)


JAVASCRIPT_RUNNER = textwrap.dedent(
    """
    // declare main function
    {{code}}

    // decode and prepare input object
    var inputs_obj = JSON.parse(Buffer.from('{{inputs}}', 'base64').toString('utf-8'))

    // execute main function
    var output_obj = main(inputs_obj)

    // convert output to json and print
    var output_json = JSON.stringify(output_obj)
    var result = `<<RESULT>>${output_json}<<RESULT>>`
    console.log(result)
    """
)

JAVASCRIPT_DEFAULT_CODE = "function main({arg1, arg2}) {\n    return {\n        result: arg1 + arg2\n    }\n}"


def javascript_script(code: str, inputs: dict[str, Any]) -> str:
    """Dify: inputs as json.dumps(ensure_ascii=False), UTF-8, base64, substituted into the runner."""
    encoded = base64.b64encode(json.dumps(inputs, ensure_ascii=False).encode()).decode()
    return JAVASCRIPT_RUNNER.replace("{{code}}", code).replace("{{inputs}}", encoded)
