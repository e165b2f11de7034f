"""pegpar.template: verbatim rendering, strict names, syntax errors, every helper."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pegpar import template
from pegpar.errors import UserError
from pegpar.spec import Source

SRC = Source("queue.yaml", 7)
VARS = {"x": "a&b<c>\"'=`", "n": 3, "f": 0.5, "yes": True, "no": False, "empty": "",
        "name": "Hello foo-bars", "path": "/data/run/model.tar.gz", "hostname": "node-1"}


def render(text: str, **extra) -> str:
    return template.render(text, {**VARS, **extra}, SRC)


def failure(text: str, **extra) -> UserError:
    with pytest.raises(UserError) as info:
        render(text, **extra)
    assert info.value.where == "queue.yaml:7"
    assert "\n" not in str(info.value)
    return info.value


# --- rendering ---------------------------------------------------------------

def test_no_html_escaping_in_any_form():
    assert render("{{ x }}|{{{x}}}|{{&x}}") == "|".join([VARS["x"]] * 3)


def test_values_render_as_written():
    assert render("{{n}} {{f}} {{yes}} {{no}} [{{empty}}] {{hostname}}") == "3 0.5 true false [] node-1"


def test_text_without_braces_is_returned_untouched():
    assert render("echo '}}' \\ done") == "echo '}}' \\ done"


def test_plain_commands_do_not_import_pybars():
    code = ("import sys; from pegpar import template; from pegpar.spec import Source;"
            "assert template.render('echo hi', {}, Source('q', 1)) == 'echo hi';"
            "template.check('echo hi', [], Source('q', 1));"
            "assert 'pybars' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_each_distinct_text_is_parsed_once():
    template._parse.cache_clear()
    for n in range(5):
        render("echo {{#if n}}{{ n }}{{/if}} once", n=n)
    assert template._parse.cache_info().misses == 1


def test_plain_substitution_skips_the_parser():
    template._parse.cache_clear()
    assert render("echo {{ n }} {{n}}x once") == "echo 3 3x once"
    assert template._parse.cache_info().misses == 0
    with pytest.raises(UserError, match="zz"):  # unknown names still go the strict way
        render("echo {{ zz }}")


def test_literal_braces_by_backslash_and_raw_block():
    assert render("docker ps --format '\\{{.Names}}' {{n}}") == "docker ps --format '{{.Names}}' 3"
    assert render("{{{{raw}}}}docker ps --format '{{.Names}}'{{{{/raw}}}}") == "docker ps --format '{{.Names}}'"
    assert render("\\\\{{n}}") == "\\3"  # an escaped backslash, then a live variable


def test_comments_and_whitespace_control():
    assert render("a{{! a comment }}b {{n ~}}   c") == "ab 3c"


def test_standalone_block_lines_leave_no_blank_lines():
    assert render("{{#if yes}}\necho a\n{{/if}}\necho b\n") == "echo a\necho b\n"


def test_names_mean_the_variables_inside_blocks_too():
    assert render("{{#with name}}{{this}}/{{n}}/{{../n}}{{/with}}") == "Hello foo-bars/3/3"
    assert render("{{this.n}} {{@root.n}}") == "3 3"


def test_a_variable_wins_over_a_helper_of_the_same_name_without_arguments():
    assert render("{{parent}} {{parent path}}", parent="mine") == "mine /data/run"


# --- strict names and syntax --------------------------------------------------

def test_unknown_variable_is_an_error_naming_it():
    err = failure("python train.py --lr {{ lrr }}")
    assert "`lrr`" in err.message and "hostname" in err.message


def test_unknown_variable_in_a_branch_not_taken_is_still_an_error():
    assert "`typo`" in failure("{{#if no}}{{typo}}{{/if}}").message
    assert "`typo`" in failure("{{#if (eq typo 1)}}x{{/if}}").message


def test_unknown_helper_is_an_error_naming_it():
    assert "unknown helper `frobnicate`" in failure("{{frobnicate x}}").message
    assert "unknown helper `frobnicate`" in failure("{{#if (frobnicate x)}}y{{/if}}").message
    assert "unknown block helper `loop`" in failure("{{#loop x}}y{{/loop}}").message


@pytest.mark.parametrize("text, message", [
    ("{{#if}}", "not closed"),
    ("{{#if yes}}a", "not closed"),
    ("{{#if yes}}a{{/unless}}", "not closed"),
    ("a{{/if}}", "not open"),
    ("{{else}}", "outside a block"),
    ("{{ x", "syntax error"),
    ("echo {{x}} {{", "syntax error"),
    ("{{#if yes}}{{x}{{/if}}", "syntax error"),
    ("{{#if}}a{{/if}}", "takes 1 argument"),
    ("{{replace x}}", "takes 3 arguments"),
    ("{{and yes}}", "at least 2"),
    ("{{> partial}}", "partials"),
    ("{{replace x from=1}}", "named arguments"),
    ("{{if yes}}", "block helper"),
    ("{{#eq n 3}}a{{/eq}}", "not a block helper"),
    ("{{@index}}", "only defined inside"),
    ("{{n.size}}", "no fields"),
])
def test_syntax_and_usage_errors(text, message):
    assert message in failure(text).message


def test_value_dependent_errors_at_render():
    assert "not a number" in failure("{{#if (gt x 1)}}a{{/if}}").message
    assert "not found" in failure("{{lookup this 'nope'}}").message


def test_check_validates_without_values():
    template.check("{{ a }} {{to_upper_case b}}", ["a", "b"], SRC)
    with pytest.raises(UserError, match="`c`"):
        template.check("{{ a }} {{ c }}", ["a"], SRC)
    with pytest.raises(UserError, match="not closed"):
        template.check("{{#if a}}", ["a"], SRC)


def test_is_template():
    assert template.is_template("a {{b}}") and not template.is_template("a { b }")


# --- helpers: one test each -----------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("{{replace path '.tar.gz' ''}}", "/data/run/model"),
    ("{{to_lower_case name}}", "hello foo-bars"),
    ("{{to_upper_case name}}", "HELLO FOO-BARS"),
    ("[{{trim ' a b  '}}]", "[a b]"),
    ("[{{trim_start ' a '}}]", "[a ]"),
    ("[{{trim_end ' a '}}]", "[ a]"),
    ("{{to_snake_case name}}", "hello_foo_bars"),
    ("{{to_kebab_case name}}", "hello-foo-bars"),
    ("{{to_camel_case name}}", "helloFooBars"),
    ("{{to_pascal_case name}}", "HelloFooBars"),
    ("{{to_screaming_snake_case name}}", "HELLO_FOO_BARS"),
    ("{{to_title_case name}}", "Hello Foo Bars"),
    ("{{to_train_case name}}", "Hello-Foo-Bars"),
    ("{{to_snake_case 'HTTPServer2Go'}} {{to_camel_case 'learning_rate'}}", "http_server_2_go learningRate"),
    ("{{quote 'a b'}} {{quote 'plain'}} {{quote ''}}", "'a b' plain ''"),
    ("{{quote \"'\" \"it's\"}}", "'it'\"'\"'s'"),
    ("{{quote '\"' 'say \"$HOME\"'}}", '"say \\"\\$HOME\\""'),
    ("{{unquote \"'a b'\"}}|{{unquote '\"x\"'}}|{{unquote \"it's\"}}|{{unquote \"'a'b\"}}", "a b|x|it's|'a'b"),
    ("{{first_non_empty empty '' 'fallback' 'later'}}", "fallback"),
    ("[{{first_non_empty empty ''}}]", "[]"),
    ("{{first_non_empty empty n}}", "3"),
    ("{{file_name path}}", "model.tar.gz"),
    ("{{parent path}} [{{parent 'model'}}] {{parent './model'}} [{{parent '/'}}]", "/data/run [] . []"),
    ("{{extension path}} [{{extension '.bashrc'}}] [{{extension 'Makefile'}}]", "gz [] []"),
    ("{{#if yes}}Y{{else}}N{{/if}}{{#if empty}}Y{{else}}N{{/if}}{{#if 0}}Y{{/if}}", "YN"),
    ("{{#unless empty}}U{{/unless}}{{#unless yes}}U{{else}}E{{/unless}}", "UE"),
    ("{{#each this}}{{#if @first}}{{@key}}{{/if}}{{#if @last}}..{{@index}}{{/if}}{{/each}}", "x..8"),
    ("{{#each name}}x{{else}}not a list{{/each}}", "not a list"),
    ("{{#with name}}<{{this}}>{{/with}}{{#with empty}}?{{else}}none{{/with}}", "<Hello foo-bars>none"),
    ("{{lookup this 'n'}} {{lookup name 0}}", "3 H"),
    ("{{eq n 3}} {{eq n '3'}} {{eq f '0.5'}} {{eq 'a' 'b'}} {{eq yes 'true'}}", "true true true false true"),
    ("{{ne n 4}} {{ne x x}}", "true false"),
    ("{{gt n 2}} {{gt n '3.5'}} {{gt f '0.25'}}", "true false true"),
    ("{{gte n 3}} {{gte n 4}}", "true false"),
    ("{{lt n 4}} {{lt n -1}}", "true false"),
    ("{{lte n 3}} {{lte f 0}}", "true false"),
    ("{{and yes n}} {{and yes empty}} {{and yes n f}}", "true false true"),
    ("{{or empty ''}} {{or empty 0 n}}", "false true"),
    ("{{not yes}} {{not empty}}", "false true"),
    ("{{len name}} {{len empty}}", "14 0"),
    ("{{#if (and (gt n 1) (not (eq x '')))}}deep{{/if}}", "deep"),
    ("{{#if (eq (to_upper_case hostname) 'NODE-1')}}match{{/if}}", "match"),
    ("{{^if empty}}inverted{{/if}}", "inverted"),
])
def test_helpers(text, expected):
    assert render(text) == expected


@pytest.mark.parametrize("value", [0, 0.0, False, "false", "0", "00", -1])
def test_a_variable_is_true_unless_its_text_is_empty_as_in_pegasus(value):
    """Pegasus handed every value to Handlebars as text: `{{#if gpu}}` with
    gpu 0 is true there, and so here; `len` counts the characters."""
    text = "false" if value is False else str(value)
    assert render("{{#if v}}T{{else}}F{{/if}}{{#unless v}}U{{/unless}} {{not v}} {{and v v}} {{len v}}",
                  v=value) == f"T false true {len(text)}"


def test_an_empty_variable_is_false_and_comparisons_still_see_numbers():
    assert render("{{#if v}}T{{else}}F{{/if}} {{not v}}", v="") == "F true"
    assert render("{{#if (eq v 0)}}zero{{/if}} {{gt v -1}} {{eq v '0'}}", v=0) == "zero true true"
    assert render("{{#if 0}}T{{else}}F{{/if}} {{not false}}") == "F true"  # literals keep Handlebars' rules


@pytest.mark.parametrize("opt, expected", [("adam", "A"), ("sgd", "S"), ("rms", "O")])
def test_else_if_chains_as_in_handlebars(opt, expected):
    text = "{{#if (eq opt 'adam')}}A{{else if (eq opt 'sgd')}}S{{else}}O{{/if}}"
    assert render(text, opt=opt) == expected
    chain = "{{#if a}}1{{else if b}}2{{else unless c}}3{{else}}4{{/if}}"
    assert [render(chain, a=a, b=b, c=c) for a, b, c in [("x", "", ""), ("", "x", ""), ("", "", ""), ("", "", "x")]] \
        == ["1", "2", "3", "4"]
    assert render("{{#if empty}}1{{~else if yes~}} 2 {{~/if}}.") == "2."
    assert render("{{{{raw}}}}{{else if x}}{{{{/raw}}}}") == "{{else if x}}"


def test_numbers_with_a_fraction_or_an_exponent_as_in_handlebars():
    assert render("{{#if (gt f 0.25)}}big{{/if}} {{lt f .75}} {{gt n 2.5}} {{gt f 1e3}} {{eq f 0.5}} {{lt f -1.5}}") \
        == "big true true false true false"
    assert render("{{eq x '0.5 a'}} 0.5 {{#if (lt f 1.0E-1)}}t{{else}}f{{/if}}", x="0.5 a") == "true 0.5 f"


def test_a_long_comment_ends_at_its_own_end_only():
    assert render("train {{!-- --seed {{n}} --}} --lr {{f}}") == "train  --lr 0.5"
    assert render("{{!-- a }} b --}}z {{~!-- c --~}} y") == "zy"


def test_quote_output_reads_back_in_sh_and_unquote_inverts_it():
    for value in ["a b", "it's", 'say "hi"', "$HOME `x` \\ ;|&", "", "plain"]:
        for call in ("quote v", "quote \"'\" v", "quote '\"' v"):
            quoted = render("{{" + call + "}}", v=value)
            out = subprocess.run(["sh", "-c", f"printf %s {quoted}"], capture_output=True, text=True, timeout=30)
            assert out.stdout == value
            assert render("{{unquote (" + call + ")}}", v=value) == value


def test_quote_rejects_an_unknown_quote_symbol():
    assert "quote symbol" in failure("{{quote '`' x}}").message


@pytest.mark.parametrize("text", ["echo {{{ x }}", "a{{{x}} b"])
def test_a_brace_against_a_placeholder_is_a_syntax_error_everywhere(text):
    """The fast path for `{{ name }}` must not read `{{{ x }}` as `{` + x: the
    check of `pegpar add`, and rendering on any sub-node, refuse it alike."""
    with pytest.raises(UserError, match="syntax error"):
        template.check_syntax(text, SRC)
    with pytest.raises(UserError, match="syntax error"):
        template.render(text, {"x": 1}, SRC)


@pytest.mark.parametrize("text, defined, missing", [
    ("{{#if extra}}x{{else}}y{{/if}}", "x", "y"),
    ("{{#unless extra}}u{{else}}{{extra}}{{/unless}}", "v", "u"),
    ("{{#with extra}}<{{this}}>{{/with}}", "<v>", ""),
    ("{{#each extra}}e{{else}}none{{/each}}", "none", "none"),  # a plain value is no collection
    ("[{{lookup extra 0}}]", "[v]", "[]"),
    ("{{#if extra}}--x {{extra}}{{/if}}", "--x v", ""),
])
def test_a_variable_a_block_or_lookup_tests_may_be_missing(text, defined, missing):
    assert template.render(text, {"extra": "v"}, SRC) == defined
    assert template.render(text, {}, SRC) == missing


@pytest.mark.parametrize("text", ["{{extra}}", "{{#if (eq extra 1)}}x{{/if}}", "{{#if extra}}x{{else}}{{extra}}{{/if}}",
                                  "{{to_upper_case extra}}"])
def test_a_bare_use_of_a_missing_variable_is_still_an_error(text):
    with pytest.raises(UserError, match="unknown variable `extra`"):
        template.render(text, {}, SRC)


def test_helpers_read_on_the_controller(tmp_path, monkeypatch):
    monkeypatch.setenv("PEGPAR_TEST_VALUE", "from env")
    monkeypatch.delenv("PEGPAR_TEST_UNSET", raising=False)
    (tmp_path / "note.txt").write_text("hello\n")
    (tmp_path / "link").symlink_to(tmp_path / "note.txt")
    r = lambda text: template.render(text, {"d": str(tmp_path)}, SRC)  # noqa: E731
    assert r("{{env_var 'PEGPAR_TEST_VALUE'}}|{{env_var 'PEGPAR_TEST_UNSET'}}") == "from env|"
    assert r("{{env_var 'FAMILY'}}") == "unix" and r("{{env_var 'OS'}}") in ("linux", "macos")
    assert r("{{read_to_str (replace '@/note.txt' '@' d)}}") == "hello\n"
    assert r("[{{read_to_str (replace '@/none' '@' d)}}]") == "[]"
    assert r("{{canonicalize (replace '@/link' '@' d)}}") == str((tmp_path / "note.txt").resolve())
    assert r("[{{canonicalize (replace '@/none' '@' d)}}]") == "[]"


def test_json_text_in_and_out():
    r = lambda text: template.render(text, {"cfg": '{"lr": 0.1, "layers": [2, 4]}'}, SRC)  # noqa: E731
    assert r("{{lookup (str_to_json cfg) 'lr'}}") == "0.1"
    assert r("{{#each (lookup (str_to_json cfg) 'layers')}}{{this}} {{/each}}") == "2 4 "
    assert r("{{json_to_str (str_to_json cfg)}}") == '{"lr":0.1,"layers":[2,4]}'
    with pytest.raises(UserError, match="str_to_json: not JSON"):
        template.render("{{str_to_json x}}", {"x": "{nope"}, SRC)


@pytest.mark.parametrize("helper", ["json_query", "json_str_query", "from_json", "to_json", "jsonnet", "assign",
                                    "http_get", "gitignore_io"])
def test_pegasus_helpers_pegpar_cannot_honour_say_so(helper):
    with pytest.raises(UserError, match=f"`{helper}` is not provided by pegpar: ") as err:
        template.render("{{" + helper + " 'a' 'b'}}", {}, SRC)
    assert err.value.where == str(SRC)
