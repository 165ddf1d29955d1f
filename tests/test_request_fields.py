"""The server's method fields come from the methods: each declares the request fields it reads, turns them
into a registry spec, and says what it adds to a response (pure: no model, no server)."""

import pytest
from pydantic import ValidationError

from tokenskip.inference.base import Generation
from tokenskip.methods import FieldError, Method, RequestField, get_method, method_class
from tokenskip.serve.protocol import APIError, ChatCompletionRequest, CompletionRequest, request_model

MSGS = [{"role": "user", "content": "1 + 1?"}]


def spec(max_tokens=100, max_budget=4096, **fields):
    try:  # a value out of the field's declared range is refused by the request type, as the server does
        req = ChatCompletionRequest.model_validate({"messages": MSGS, **fields})
    except ValidationError as e:
        field = str(e.errors()[0]["loc"][0])
        return 400, f"invalid request: {field}: {e.errors()[0]['msg']}", field
    try:
        return req.method_spec(max_tokens, max_budget)
    except APIError as e:
        return e.status, e.message, e.param


@pytest.mark.parametrize(
    "fields,expected",
    [
        ({}, ("original", None)),
        ({"compression_ratio": 0.5}, ("tokenskip@0.5", "compression_ratio")),
        ({"compression_ratio": 1}, ("tokenskip@1", "compression_ratio")),
        (
            {"compression_ratio": 1.5},
            (
                400,
                "invalid request: compression_ratio: must be a number in (0, 1], got 1.5",
                "compression_ratio",
            ),
        ),
        ({"token_budget": 50}, ("tale-ep@50", "token_budget")),
        ({"token_budget": "auto"}, ("tale-ep", "token_budget")),
        ({"token_budget": 5000}, (400, "token_budget must be in [1, 4096], got 5000", "token_budget")),
        ({"thinking_budget": 8}, ("budget-forcing@8", "thinking_budget")),
        ({"thinking_budget": 8, "thinking_wait": 2}, ("budget-forcing@8+wait2", "thinking_budget")),
        (
            {"thinking_budget": 0},
            (400, "invalid request: thinking_budget: must be an integer >= 1, got 0", "thinking_budget"),
        ),
        (
            {"thinking_budget": 100},
            (
                400,
                "thinking_budget 100 must be below max_tokens 100 (the answer gets the rest)",
                "thinking_budget",
            ),
        ),
        (
            {"thinking_budget": 8, "thinking_wait": -1},
            (400, "invalid request: thinking_wait: must be an integer >= 0, got -1", "thinking_wait"),
        ),
        ({"thinking_wait": 2}, (400, "thinking_wait needs thinking_budget", "thinking_wait")),
        (
            {"thinking_wait": 2, "compression_ratio": 0.5},
            (400, "thinking_wait needs thinking_budget", "thinking_wait"),
        ),
        ({"method": "beconcise"}, ("beconcise", "method")),
        (
            {"token_budget": 50, "method": "beconcise"},
            (400, "token_budget and method cannot be combined", "method"),
        ),
        (
            {"compression_ratio": 0.5, "thinking_budget": 8},
            (400, "compression_ratio and thinking_budget cannot be combined", "thinking_budget"),
        ),
    ],
)
def test_method_spec_from_the_request_fields(fields, expected):
    assert spec(**fields) == expected


def test_request_types_are_the_declared_ones():
    props = CompletionRequest.model_json_schema()["properties"]
    # the declared ranges are in the schema (RequestField.minimum / maximum)
    assert props["compression_ratio"]["anyOf"] == [
        {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
        {"type": "null"},
    ]
    assert props["token_budget"]["anyOf"] == [
        {"type": "integer", "minimum": 1},
        {"type": "string", "enum": ["auto"]},
        {"type": "null"},
    ]
    assert props["thinking_wait"]["anyOf"] == [{"type": "integer", "minimum": 0}, {"type": "null"}]
    names = list(props)
    assert names[names.index("best_of") + 1 :] == [
        "compression_ratio", "token_budget", "thinking_budget", "thinking_wait", "method",
        "prompt", "raw_prompt",
    ]  # fmt: skip
    for bad in ({"compression_ratio": "half"}, {"token_budget": "lots"}, {"thinking_budget": 8.0}):
        with pytest.raises(ValueError):
            CompletionRequest.model_validate({"prompt": "x", **bad})


class Shout(Method):
    """A toy method with a request field of its own (registered nowhere: given to ``request_model``)."""

    kind = "shout"
    arg = "text"
    request_fields = (RequestField("shout", str), RequestField("times", int, picks=False))

    @classmethod
    def from_request(cls, values, max_tokens, max_budget):
        if not values["shout"].strip():
            raise FieldError("shout", "shout must not be blank")
        return f"shout@{values['shout']}x{values['times'] or 1}"


def test_a_method_adds_its_fields_to_the_request():
    model = request_model([method_class("tokenskip"), Shout])
    assert list(model.method_fields) == ["compression_ratio", "shout", "times"]
    req = model.model_validate({"shout": "hey", "times": 3})
    assert req.method_spec(100, 10) == ("shout@heyx3", "shout")
    with pytest.raises(APIError, match="shout must not be blank") as e:
        model.model_validate({"shout": " "}).method_spec(100, 10)
    assert e.value.param == "shout"
    with pytest.raises(APIError, match="times needs shout"):
        model.model_validate({"times": 3}).method_spec(100, 10)
    with pytest.raises(APIError, match="compression_ratio and shout cannot be combined"):
        model.model_validate({"shout": "a", "compression_ratio": 0.5}).method_spec(100, 10)
    with pytest.raises(TypeError, match="already taken"):
        request_model([Shout, Shout])


def test_response_info_is_the_methods():
    gen = Generation("x", 7, "stop", 0.1, 1)
    assert get_method("beconcise").response_info({}, {}, gen, None) == {}
    tale = get_method("tale-ep@50")
    fixed = {"budget": 50, "budget_source": "fixed"}
    assert tale.response_info(fixed, {}, gen, "token_budget") == {
        "token_budget": 50,
        "budget_source": "request",
    }
    assert tale.response_info(fixed, {}, gen, "method")["budget_source"] == "fixed"
    estimated = {"budget": 42, "budget_source": "parsed", "estimate_output": "[[42]]", "estimate_tokens": 5}
    assert get_method("tale-ep").response_info(estimated, {}, gen, "token_budget") == {
        "token_budget": 42, "budget_source": "parsed", "estimate_output": "[[42]]", "estimate_tokens": 5,
        "total_tokens_with_estimate": 12,
    }  # fmt: skip
    extra = {"thinking_budget": 8, "forced": True, "waits": 0, "thinking_generated": 8, "other": 1}
    assert get_method("budget-forcing@8").response_info({}, extra, gen, None) == {
        k: extra[k] for k in ("thinking_budget", "forced", "waits", "thinking_generated")
    }
