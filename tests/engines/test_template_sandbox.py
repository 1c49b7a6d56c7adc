"""A model's chat template is untrusted input: limits on time and size, one sentence each
(engines/template_sandbox.py)."""
from __future__ import annotations

import subprocess

import pytest

from app.domain.errors import ModelInvalid
from app.domain.messages import ChatMessage, Role
from engines.chat_format import ChatFormatter
from engines.gguf import read_gguf
from engines.template_sandbox import TEMPLATE_MAX_CHARS, GuardedTemplate
from tests.conftest import outpost_cmd
from tests.template_models import with_chat_template

NESTED_LOOPS = ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}"
                "{% endfor %}{{ messages[0]['content'] }}")
ESCAPE = "{{ ''.__class__.__mro__[1].__subclasses__() }}"
HI = [{"role": "user", "content": "hi"}]


def render(template: str, seconds: float = 2.0, limit: int = 1 << 20) -> str:
    return GuardedTemplate(template, "hostile.gguf", seconds=seconds).render(limit, messages=HI)


def test_the_bundled_template_renders_as_llama_cpp_renders_it(bundled_model):
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    template = read_gguf(bundled_model).chat_template
    messages = [ChatMessage(Role.SYSTEM, "Be brief.")] + [
        ChatMessage(Role.USER if i % 2 == 0 else Role.ASSISTANT, f"turn {i} <b>&amp;</b>")
        for i in range(9)]
    ours = ChatFormatter(template, "<|im_start|>", "<|im_end|>", "m.gguf").format(messages)
    theirs = Jinja2ChatFormatter(template=template, eos_token="<|im_end|>",
                                 bos_token="<|im_start|>")(messages=[m.as_dict() for m in messages])
    assert ours.text == theirs.prompt
    assert ours.stop == ("<|im_end|>",)


def test_a_sandbox_escape_is_a_model_error_and_stays_one():
    guarded = GuardedTemplate(ESCAPE, "hostile.gguf")
    with pytest.raises(ModelInvalid) as first:
        guarded.render(1 << 20, messages=HI)
    assert "hostile.gguf" in str(first.value) and "sandbox" in str(first.value)
    assert first.value.exit_code == 3
    with pytest.raises(ModelInvalid) as again:  # broken for good: no second render
        guarded.render(1 << 20, messages=HI)
    assert again.value is first.value


def test_loops_that_never_end_are_stopped_by_the_deadline():
    guarded = GuardedTemplate(NESTED_LOOPS, "hostile.gguf", seconds=0.2)
    with pytest.raises(ModelInvalid, match="needed more than 0.2 s"):
        guarded.render(1 << 20, messages=HI)
    with pytest.raises(ModelInvalid, match="needed more than 0.2 s"):
        guarded.render(1 << 20, messages=HI)  # at once, from then on


def test_a_deadline_that_passes_after_a_render_never_strikes_later():
    guarded = GuardedTemplate("{{ messages[0]['content'] }}", "ok.gguf", seconds=0.05)
    assert guarded.render(1 << 20, messages=HI) == "hi"
    import time

    time.sleep(0.15)  # the watchdog's time has passed: nothing may be raised here
    assert sum(range(10000)) == 49995000


def test_a_deadline_at_any_moment_ends_in_one_sentence_never_a_stray_exception():
    """The watchdog and the calls' own deadline check fire at every point of a render here:
    each render either returns its text or raises ModelInvalid, and nothing arrives later."""
    template = ("{% for m in messages %}{{ '<|' + m['role'] + '|>' }}{{ m['content'] | trim }}"
                "{% for i in range(3) %}{{ loop.index }}{% endfor %}{% endfor %}")
    messages = [{"role": "user", "content": f"message {i} " * 20} for i in range(300)]
    outcomes = set()
    for i in range(200):
        guarded = GuardedTemplate(template, "t.gguf", seconds=0.0002 + (i % 9) * 0.0004)
        try:
            guarded.render(1 << 24, messages=messages)
            outcomes.add("text")
        except ModelInvalid:
            outcomes.add("refused")
        sum(range(2000))  # a stray time-up would land here, outside the try
    assert outcomes <= {"text", "refused"} and "refused" in outcomes


def test_the_watchdog_is_stopped_before_a_deadline_is_reported(monkeypatch):
    """A call's own deadline check fires first (the injected clock says the time is up), and
    reporting it takes longer than the watchdog's time: the watchdog must already be stopped,
    or its time-up lands inside the handler and escapes as a stray exception (it did)."""
    import time

    from engines import template_sandbox

    ticks = iter([0.0, 0.0] + [100.0] * 1000)  # compile and render start, then: time is up
    guarded = GuardedTemplate("{{ range(3) | list }}", "slow.gguf", seconds=0.05,
                              clock=lambda: next(ticks))
    real_break = template_sandbox.GuardedTemplate._break

    def slow_break(self, what):
        time.sleep(0.2)  # the watchdog's 0.05 s pass meanwhile
        return real_break(self, what)

    monkeypatch.setattr(template_sandbox.GuardedTemplate, "_break", slow_break)
    with pytest.raises(ModelInvalid, match="needed more than 0.05 s"):
        guarded.render(1 << 20, messages=HI)
    sum(range(2000))


@pytest.mark.parametrize("template, words", [
    ("{{ 9**9**9 }}", "power"),
    ("{{ 'x' * 100000000 }}", "repeated text"),
    ("{{ 'x'.ljust(1000000000) }}", "number too large"),
    ("{{ '%0999999999d' % 1 }}", "format width"),
    ("{% for i in range(100000) %}{{ 'yyyyyyyyyyyyyyyy' }}{% endfor %}", "M characters"),
    ("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "recursed"),
])
def test_templates_that_grow_without_bound_are_refused_before_they_eat_memory(template, words):
    with pytest.raises(ModelInvalid, match=words):
        render(template, limit=1 << 20)


def test_a_template_refusing_the_conversation_names_the_conversation_not_the_file():
    guarded = GuardedTemplate("{{ raise_exception('Conversation roles must alternate') }}",
                              "strict.gguf")
    with pytest.raises(ModelInvalid) as refused:
        guarded.render(1 << 20, messages=HI)
    assert str(refused.value) == ("The chat template in strict.gguf refused this conversation: "
                                  "Conversation roles must alternate.")
    with pytest.raises(ModelInvalid) as again:  # not broken for good: rendered again
        guarded.render(1 << 20, messages=HI)
    assert again.value is not refused.value


def test_a_huge_template_is_blamed_not_the_message():
    with pytest.raises(ModelInvalid, match=r"is 10\.5 MB, more than the 1 MiB"):
        GuardedTemplate("{{ 'a' }}" * ((10 << 20) // 9), "big.gguf")
    assert len("x" * TEMPLATE_MAX_CHARS) == TEMPLATE_MAX_CHARS  # the limit itself is allowed
    GuardedTemplate("{# #}" + " " * (TEMPLATE_MAX_CHARS - 5), "edge.gguf")


def test_invalid_jinja_is_one_sentence():
    with pytest.raises(ModelInvalid, match=r"is not valid Jinja \(line 1"):
        render("{% for m in messages %}{{ m.content")


# -- the CLI, on real model files whose templates the gguf package wrote --------------------------
@pytest.fixture(scope="module")
def hostile_models(bundled_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile-templates")
    return {name: with_chat_template(bundled_model, folder / f"{name}.gguf", template)
            for name, template in (("escape", ESCAPE), ("loops", NESTED_LOOPS),
                                   ("huge", "{{ messages[0]['content'] }}" + " " * (10 << 20)))}


@pytest.mark.slow
@pytest.mark.local_model
@pytest.mark.parametrize("name, words", [
    ("escape", "tried to reach outside Jinja's sandbox"),
    ("loops", "needed more than 2 s to format this conversation"),
    ("huge", "is 10.5 MB, more than the 1 MiB any real chat template needs"),
])
def test_ask_with_a_hostile_template_exits_3_with_one_sentence(hostile_models, name, words):
    done = subprocess.run([*outpost_cmd(), "ask", "--model", str(hostile_models[name]), "Hi"],
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stderr
    assert words in done.stderr
    assert f"{name}.gguf" in done.stderr
    assert done.stderr.count("\n") == 1  # one sentence


@pytest.mark.slow
@pytest.mark.local_model
@pytest.mark.gui
def test_the_window_says_what_is_wrong_with_the_template_and_saves_nothing(qtbot, outpost,
                                                                            hostile_models):
    from tests.support import send

    window = outpost.window
    with qtbot.waitSignal(outpost.loader.model_ready, timeout=60000):
        window.model_menu.choose_model(str(hostile_models["loops"]))
    states, ticks = [], []
    outpost.window.controller.state_changed.connect(states.append)
    from PySide6.QtCore import QTimer

    heartbeat = QTimer()
    heartbeat.timeout.connect(lambda: ticks.append(1))
    heartbeat.start(20)
    send(qtbot, outpost, "Hi")
    heartbeat.stop()
    # the 2 s the template had ran off the GUI thread: the window went on (its timers fired)
    assert "preparing" in states and len(ticks) >= 5
    assert window.banner.isVisible()
    assert "loops.gguf needed more than 2 s" in window.banner.label.text()
    assert outpost.store.list_conversations() == []  # refused before anything was saved
    assert window.composer.edit.toPlainText() == "Hi"  # the draft is not lost
