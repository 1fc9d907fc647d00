"""The snippets the scenarios send, and the exact outputs that count as a correct run.

P1 sends what Dify's python3 code node sends for its default template, and N2 what its javascript code node sends
(``language: "nodejs"``), so the figures speak for real traffic.
"""

from __future__ import annotations

import json
from typing import Any

API_KEY = "dify-sandbox"
RUN_PATH = "/v1/sandbox/run"
HEADERS = {"X-Api-Key": API_KEY, "Content-Type": "application/json"}

# Dify's python3 transformer output for the default template with arg1="hello ", arg2="world".
DIFY_TEMPLATE_CODE = """\
# declare main function
import httpx
def main(arg1: str, arg2: str) -> dict:
    return {
        "result": arg1 + arg2,
    }

import json
from base64 import b64decode

# decode and prepare input dict
inputs_obj = json.loads(b64decode('eyJhcmcxIjogImhlbGxvICIsICJhcmcyIjogIndvcmxkIn0=').decode('utf-8'))

# execute main function
output_obj = main(**inputs_obj)

# convert output to json and print
output_json = json.dumps(output_obj, indent=4)
result = f'<<RESULT>>{output_json}<<RESULT>>'
print(result)
"""
DIFY_TEMPLATE_STDOUT = '<<RESULT>>{\n    "result": "hello world"\n}<<RESULT>>\n'

# Dify's javascript (nodejs) transformer output for the default template, same inputs.
DIFY_NODE_TEMPLATE_CODE = """\
// declare main function
function main({arg1, arg2}) {
    return {
        result: arg1 + arg2
    }
}

// decode and prepare input object
var inputs_obj = JSON.parse(Buffer.from('eyJhcmcxIjogImhlbGxvICIsICJhcmcyIjogIndvcmxkIn0=', 'base64').toString('utf-8'))

// execute main function
var output_obj = main(inputs_obj)

// convert output to json and print
var output_json = JSON.stringify(output_obj)
var result = `<<RESULT>>${output_json}<<RESULT>>`
console.log(result)
"""
DIFY_NODE_TEMPLATE_STDOUT = '<<RESULT>>{"result":"hello world"}<<RESULT>>\n'

SLEEP_CODE = 'import time; time.sleep(2); print("ok")'
SLEEP_STDOUT = "ok\n"

TRIVIAL_CODE = "print(1)"
TRIVIAL_STDOUT = "1\n"

NODE_TRIVIAL_CODE = "console.log(1)"
NODE_TRIVIAL_STDOUT = "1\n"


def run_body(code: str, language: str = "python3") -> dict[str, Any]:
    """The JSON body of ``POST /v1/sandbox/run`` as Dify's code executor sends it: an empty ``preload`` and
    ``enable_network`` always true (a body without it asks for a network-off run, which is not Dify's traffic)."""
    return {"language": language, "code": code, "preload": "", "enable_network": True}


def stdout_in_response_body(stdout: str) -> bytes:
    """How ``stdout`` appears inside the raw response body: JSON-escaped, without the surrounding quotes.

    Any JSON encoder writes a newline as ``\\n`` and a quote as ``\\"`` (ASCII text has one escaped form), so a
    plain substring search in the body is exact without parsing it.
    """
    return json.dumps(stdout)[1:-1].encode()


def is_ok_run(envelope: Any, stdout: str) -> bool:
    """A run succeeded: envelope code 0 and exactly the expected stdout."""
    if not isinstance(envelope, dict) or envelope.get("code") != 0:
        return False
    data = envelope.get("data")
    return isinstance(data, dict) and data.get("stdout") == stdout
