"""The Modelfile's TEMPLATE, rendered by Go's text/template (what Ollama uses), gives exactly the prompt lorakit
renders for the same conversation with the run's Jinja template (BOS aside: Ollama adds it from the GGUF)."""

import json
import shutil
import subprocess

import pytest

from lorakit.data.formats import Turn
from lorakit.data.prompt_shape import PromptShape
from lorakit.data.templates import TEMPLATES
from lorakit.data.tokenize import Encoder
from lorakit.infer.export.modelfile import go_template
from tests.conftest import build_tokenizer

RENDER_GO = """package main

import (
	"encoding/json"
	"os"
	"text/template"
)

type Message struct {
	Role    string
	Content string
}

func main() {
	text, _ := os.ReadFile(os.Args[1])
	var data struct{ Messages []Message }
	if err := json.Unmarshal([]byte(os.Args[2]), &data); err != nil {
		panic(err)
	}
	template.Must(template.New("t").Parse(string(text))).Execute(os.Stdout, data)
}
"""
SHAPES = {
    "one turn": (PromptShape(True, "Convert this LaTeX math to Typst:\n"), ["x^2"]),
    "system and suffix": (PromptShape(True, "Q: ", " A?", "You are terse."), ["x^2"]),
    "two turns": (PromptShape(True, "Q: ", "", "Be brief."), ["hi", "again {{ .Content }}"]),
}


@pytest.fixture(scope="module")
def render(tmp_path_factory):
    """A tiny Go program that renders a template file with the messages given as JSON."""
    if shutil.which("go") is None:
        pytest.skip("needs Go (.ci/run installs Debian's golang-go)")
    folder = tmp_path_factory.mktemp("gotpl")
    (folder / "main.go").write_text(RENDER_GO)
    (folder / "go.mod").write_text("module gotpl\n\ngo 1.19\n")
    env = {"HOME": str(folder), "GOCACHE": str(folder / "cache"), "GOPATH": str(folder / "gopath"),
           "PATH": "/usr/bin:/bin:/usr/local/go/bin", "GOFLAGS": "-mod=mod"}
    subprocess.run(["go", "build", "-o", "render", "."], cwd=folder, env=env, check=True, timeout=300)
    return folder / "render"


@pytest.mark.parametrize("dialect", ["chatml", "gemma", "plain"])
@pytest.mark.parametrize("case", sorted(SHAPES))
def test_ollama_template_renders_the_runs_prompt(render, tmp_path, dialect, case):
    tokenizer = build_tokenizer()
    shape, inputs = SHAPES[case]
    turns = shape.turns(inputs[0])
    for text in inputs[1:]:
        turns = [*turns, Turn("assistant", "ok", False), *shape.turns(text)[-1:]]
    expected = Encoder(tokenizer, TEMPLATES[dialect]).render_prompt(turns).removeprefix(tokenizer.bos_token)
    template, _ = go_template(TEMPLATES[dialect], shape, tokenizer.eos_token)
    (tmp_path / "t.tpl").write_text(template)
    # Ollama hands the template the user's own text: the run's wording around it is the template's job.
    messages = [{"Role": t.role, "Content": text if t.role == "user" else t.content}
                for t, text in zip(turns, _user_texts(turns, inputs), strict=True)]
    got = subprocess.run([str(render), str(tmp_path / "t.tpl"), json.dumps({"Messages": messages})],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    assert got == expected


def _user_texts(turns, inputs):
    given = iter(inputs)
    return [next(given) if t.role == "user" else "" for t in turns]


# A chat template that writes a system turn by itself where a conversation has none, as SmolLM2's and Qwen2.5's do
DEFAULT_SYSTEM = "You are a helpful assistant named Tiny."
SYSTEM_BY_ITSELF = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\n" + DEFAULT_SYSTEM + "<|im_end|>\\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


@pytest.mark.parametrize("own_system", [None, "Answer in Typst."])
def test_a_system_text_the_runs_prompts_carry_unasked_is_the_modelfiles_system(render, tmp_path, own_system):
    from lorakit.infer.export.modelfile import modelfile_text, prompt_system

    tokenizer = build_tokenizer()
    shape = PromptShape(True, "Convert this LaTeX math to Typst:\n")
    encoder = Encoder(tokenizer, SYSTEM_BY_ITSELF, own_system)  # own_system: the run's data.system_prompt
    trained = encoder.render_prompt(shape.turns("x^2")).removeprefix(tokenizer.bos_token)
    system = prompt_system(SYSTEM_BY_ITSELF, own_system, encoder.render_prompt(shape.turns("x")))
    assert system == (own_system or DEFAULT_SYSTEM)
    text = modelfile_text(tmp_path / "m.gguf", None, SYSTEM_BY_ITSELF, shape, tokenizer.eos_token, tmp_path, system)
    assert f'SYSTEM """{system}"""' in text
    template, _ = go_template(SYSTEM_BY_ITSELF, shape, tokenizer.eos_token)
    (tmp_path / "t.tpl").write_text(template)
    # Ollama puts the Modelfile's SYSTEM first where the user gives no system message
    messages = [{"Role": "system", "Content": system}, {"Role": "user", "Content": "x^2"}]
    got = subprocess.run([str(render), str(tmp_path / "t.tpl"), json.dumps({"Messages": messages})],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    assert got == trained
