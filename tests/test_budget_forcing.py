"""Budget forcing and thinking records on a scripted character-level "model" (no weights, milliseconds).

The scripted model writes a fixed text per question, one character per token, and honours the cap, the stop
strings and EOS (the end of its script) the way the real backends do, so every branch of the method (cut,
closed early, "Wait", EOS) and the streamed increments are checked exactly.
"""

from __future__ import annotations

import pytest

from tokenskip.data.datasets import Record
from tokenskip.data.prompts import PRESETS, forced_answer, split_answer, thinking_end
from tokenskip.errors import UserError
from tokenskip.inference.base import Generation, Generator, SamplingConfig, first_stop
from tokenskip.methods import Context, get_method, make_record, parse_methods
from tokenskip.methods.budget_forcing import WAIT, next_step


class CharTokenizer:
    eos_token = "</s>"
    chat_template = None

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": list(text)}


class ScriptedModel(Generator):
    """Continues a prompt with ``reply(question_prompt, text_so_far)``, one character per token."""

    name = "scripted"

    def __init__(self, reply):
        self.tokenizer = CharTokenizer()
        self.reply = reply
        self.calls: list[tuple[list[str], SamplingConfig]] = []
        self.base: list[str] = []

    def generate(self, prompts, config):
        self.calls.append((list(prompts), config))
        out = []
        for p in prompts:
            base = max((b for b in self.base if p.startswith(b)), key=len, default=None)
            if base is None:
                self.base.append(p)
                base = p
            script = self.reply(base, p[len(base) :])
            text, reason, stop = script[: config.max_new_tokens], "stop", None
            if len(script) > config.max_new_tokens:
                reason = "length"
            hit = first_stop(text, config.stop)
            if hit is not None:
                text, reason, stop = text[: hit[0]], "stop", hit[1]
            out.append(Generation(text, len(text), reason, 0.5, len(prompts), stop_string=stop))
        return out


THINK = "<think>\nfirst I add three and two, which makes five, then I check it again"
ANSWER = "\n\nSo Tom has \\boxed{5} apples."


def r1_reply(base, so_far):
    """An R1-like model: long thinking, a close tag, an answer; completes a forced cue or a "Wait"."""
    if so_far.endswith("$\\boxed{"):
        return "5}$ apples."
    full = THINK[len("<think>\n") :] + "\n</think>" + ANSWER
    if WAIT in so_far:
        full, so_far = ", yes five.\n</think>" + ANSWER, so_far.split(WAIT, 1)[1]
    return full[len(so_far) :] if full.startswith(so_far) else ""


def ctx_for(model, preset="r1-distill", max_new_tokens=64):
    return Context(model, PRESETS[preset], SamplingConfig(max_new_tokens=max_new_tokens), model="m")


RECS = [Record("q0", "Tom has 3 apples and buys 2 more. How many?", "5")]


def test_specs_names_and_errors():
    names = [m.name for m in parse_methods("budget-forcing@16,budget-forcing@16+wait,budget-forcing@8+wait3")]
    assert names == ["budget-forcing@16", "budget-forcing@16+wait1", "budget-forcing@8+wait3"]
    m = get_method("budget-forcing@32+wait2", template="tale")  # bench passes TALE's option to every method
    assert (m.value, m.wait, m.requested_ratio) == (32, 2, None)
    assert get_method("budget-forcing@32", wait=1).name == "budget-forcing@32+wait1"  # e.g. a request field
    for bad, msg in [
        ("budget-forcing", "thinking budget"),
        ("budget-forcing@x", "thinking budget"),
        ("budget-forcing@0", ">= 1"),
        ("budget-forcing@5+waitx", "thinking budget"),
    ]:
        with pytest.raises(UserError, match=msg):
            get_method(bad)


def test_next_step_table():
    def g(reason, stop=None):
        return Generation("x", 1, reason, 0.0, stop_string=stop)

    assert next_step(g("length"), 8, 8, 0, "</think>") == "force"
    assert next_step(g("stop", "</think>"), 3, 8, 0, "</think>") == "close"
    assert next_step(g("stop", "</think>"), 3, 8, 1, "</think>") == "wait"
    assert next_step(g("stop", "</think>"), 8, 8, 1, "</think>") == "close"  # no budget left to wait
    assert next_step(g("stop"), 3, 8, 1, "</think>") == "end"  # EOS
    assert next_step(g("stop", "###"), 3, 8, 1, "</think>") == "end"  # a run stop string


def test_preset_cues_are_the_documented_strings():
    assert forced_answer("r1-distill") == "\n</think>\n\nFinal Answer: $\\boxed{"
    assert forced_answer("qwen3") == forced_answer("r1-distill")
    assert forced_answer("default") == "\n\nThe final answer is: $\\boxed{"
    assert forced_answer("qwen3-nothink") == forced_answer("default")
    assert thinking_end("r1-distill") == "</think>"
    assert thinking_end("tokenskip") == "\n\nThe final answer is:"
    assert PRESETS["qwen3"].chat_template_kwargs == {"enable_thinking": True}
    assert PRESETS["qwen3-nothink"].chat_template_kwargs == {"enable_thinking": False}
    assert PRESETS["r1-distill"].system is None and PRESETS["qwen3-nothink"].think_close is None


def test_cut_closes_thinking_and_continues_to_a_graded_answer():
    model = ScriptedModel(r1_reply)
    ctx = ctx_for(model)
    row = get_method("budget-forcing@10").run_batch(ctx, RECS)[0]
    thinking = THINK[len("<think>\n") :][:10]
    assert row["output"] == thinking + "\n</think>\n\nFinal Answer: $\\boxed{" + "5}$ apples."
    assert row["forced"] is True and row["thinking_generated"] == 10 and row["thinking_budget"] == 10
    # the thinking is the cut plus the newline before </think>
    assert row["cot"] == thinking + "\n" and row["thinking_tokens"] == 11
    assert row["answer_tokens"] == len("\n\nFinal Answer: $\\boxed{5}$ apples.")
    assert row["output_tokens"] == len(row["output"]) and row["prediction"] == "5" and row["correct"] is True
    (p1, c1), (p2, c2) = model.calls
    assert c1.max_new_tokens == 10 and c1.stop == ("</think>",)
    assert p2 == [row["prompt"] + thinking + forced_answer("r1-distill")]
    assert c2.max_new_tokens == 64 - 10 and c2.stop == ()


def test_early_close_is_kept_and_the_answer_follows():
    model = ScriptedModel(r1_reply)
    row = get_method("budget-forcing@200").run_batch(ctx_for(model, max_new_tokens=300), RECS)[0]
    # exactly what the model writes unforced
    assert row["output"] == THINK[len("<think>\n") :] + "\n</think>" + ANSWER
    assert row["forced"] is False and row["waits"] == 0
    assert row["thinking_generated"] == len(THINK) - len("<think>\n") + 1
    assert split_answer(row["output"], "r1-distill")[1] == ANSWER
    assert model.calls[1][1].max_new_tokens == 100


def test_wait_replaces_an_early_close_while_budget_is_left():
    model = ScriptedModel(r1_reply)
    row = get_method("budget-forcing@200+wait1").run_batch(ctx_for(model, max_new_tokens=300), RECS)[0]
    first = THINK[len("<think>\n") :] + "\n"
    assert row["output"] == first + WAIT + ", yes five.\n" + "</think>" + ANSWER
    assert row["waits"] == 1 and row["forced"] is False
    assert row["thinking_generated"] == len(first) + len(", yes five.\n")
    assert [c.max_new_tokens for _, c in model.calls] == [200, 200 - len(first), 100]


def test_eos_inside_thinking_keeps_the_output():
    model = ScriptedModel(lambda base, so_far: "" if so_far else "short thought")
    row = get_method("budget-forcing@50").run_batch(ctx_for(model), RECS)[0]
    assert row["output"] == "short thought" and row["forced"] is False and len(model.calls) == 1
    assert row["answer_tokens"] == 0 and row["thinking_tokens"] == len("short thought")


def test_plain_cot_presets_cut_at_the_answer_cue():
    cot = "3 plus 2 is 5, so he has 5 apples in the end"

    def reply(base, so_far):
        if so_far.endswith("$\\boxed{"):
            return "5}$"
        full = cot + "\n\nThe final answer is: $\\boxed{5}$"
        return full[len(so_far) :] if full.startswith(so_far) else ""

    model = ScriptedModel(reply)
    forced = get_method("budget-forcing@12").run_batch(ctx_for(model, "default"), RECS)[0]
    assert forced["output"] == cot[:12] + "\n\nThe final answer is: $\\boxed{5}$" and forced["forced"] is True
    assert forced["cot"] == cot[:12] and forced["thinking_tokens"] == 12 and forced["correct"] is True
    natural = get_method("budget-forcing@100").run_batch(ctx_for(model, "default", 128), RECS)[0]
    assert natural["output"] == cot + "\n\nThe final answer is: $\\boxed{5}$" and natural["forced"] is False
    assert natural["answer_tokens"] == len("\n\nThe final answer is: $\\boxed{5}$")


def test_stream_increments_add_up_to_the_recorded_outputs():
    model = ScriptedModel(r1_reply)
    recs = [*RECS, Record("q1", "Another question?", "5")]
    method = get_method("budget-forcing@10")
    ctx = ctx_for(model)
    reqs = method.requests(ctx, recs)
    parts: dict[int, list[str]] = {0: [], 1: []}
    gens = method.generate(ctx, reqs, on_text=lambda i, t: parts[i].append(t))
    for i, g in enumerate(gens):
        assert "".join(parts[i]) == g.text and g.extra["forced"] is True
        assert parts[i][1] == forced_answer("r1-distill")  # cut, then the forced close + cue, then the answer


def test_budget_must_leave_room_for_the_answer():
    with pytest.raises(UserError, match="must be above the thinking budget"):
        get_method("budget-forcing@64").run_batch(ctx_for(ScriptedModel(r1_reply)), RECS)


def test_records_count_thinking_and_answer_tokens():
    model = ScriptedModel(r1_reply)
    out = "<think>\nhmm\n</think>\n\nIt is \\boxed{5}."
    row = make_record(RECS[0], "p", Generation(out, 9, "stop", 0.1), model, "m", PRESETS["qwen3"])
    assert row["cot"] == "\nhmm\n" and row["thinking_tokens"] == row["cot_tokens"] == 5
    assert row["answer_tokens"] == len("\n\nIt is \\boxed{5}.")
    plain = "2 and 3\n\nThe final answer is: $\\boxed{5}$"
    row = make_record(RECS[0], "p", Generation(plain, 9, "stop", 0.1), model, "m", PRESETS["default"])
    assert row["cot"] == "2 and 3" and row["answer_tokens"] == len(plain) - len("2 and 3")
    cut = make_record(RECS[0], "p", Generation("thinking on and on", 9, "length", 0.1), model, "m",
                      PRESETS["r1-distill"])  # fmt: skip
    assert cut["thinking_tokens"] == len("thinking on and on") and cut["answer_tokens"] == 0
