"""The Go-template formatter behind ``--format`` (conveyor/cli/format.py).

Scripts written for docker pass their ``--format`` strings to conveyor unchanged; these tests
prevent a template docker accepts from printing something else here (or failing), a table
whose columns do not line up the way docker's do, and a bad template that fails with a
traceback or a message that does not say what is wrong. Most need no engine; the last ones
compare with the docker CLI itself on a container made for the test.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from conveyor.cli.format import Fields, Template, TemplateError, go_quote, tabwriter

INSPECT = {  # the shape of `docker inspect`'s answer: maps, lists, numbers, booleans
    "Id": "4fa6e0f0c678",
    "Name": "/boring_feynman",
    "Args": ["-c", "exit 3"],
    "State": {"Running": False, "ExitCode": 3, "Status": "exited"},
    "Config": {"Image": "busybox:latest", "Cmd": ["sh", "-c", "exit 3"], "Labels": {"team": "a", "tier": "web"}},
    "NetworkSettings": {
        "Networks": {"bridge": {"IPAddress": "172.17.0.2"}, "other": {"IPAddress": "10.0.0.5"}},
        "Ports": {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}]},
    },
    "Sizes": [1.5, 2.0],
    "Nothing": None,
}


def out(template: str, data=INSPECT) -> str:
    return Template(template).execute(data)


@pytest.mark.parametrize("template, expected", [
    # docker's "Format command and log output" page, on an inspect-like document
    ('{{join .Args " , "}}', "-c , exit 3"),
    ("{{json .Config.Labels}}", '{"team":"a","tier":"web"}'),
    ("{{lower .Name}}", "/boring_feynman"),
    ('{{split .Config.Image ":"}}', "[busybox latest]"),
    ("{{title .Name}}", "/Boring_feynman"),
    ("{{upper .Name}}", "/BORING_FEYNMAN"),
    ("{{pad .Id 2 3}}|", "  4fa6e0f0c678   |"),
    ("{{truncate .Id 4}}", "4fa6"),
    ("{{range .NetworkSettings.Networks}}{{println .IPAddress}}{{end}}", "172.17.0.2\n10.0.0.5\n"),
    # docker inspect's reference examples
    ("{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", "172.17.0.210.0.0.5"),
    ("{{range $p, $conf := .NetworkSettings.Ports}} {{$p}} -> {{(index $conf 0).HostPort}} {{end}}", " 80/tcp -> 8080 "),
    ('{{(index (index .NetworkSettings.Ports "80/tcp") 0).HostPort}}', "8080"),
    ('{{index .Config.Labels "tier"}}', "web"),
    ("{{json .Config.Cmd}}", '["sh","-c","exit 3"]'),
    ("{{.Name}} {{.State.Running}} {{.State.ExitCode}}", "/boring_feynman false 3"),
    # values as Go prints them
    ("{{.Config.Labels}}", "map[team:a tier:web]"),
    ("{{.Config.Cmd}}", "[sh -c exit 3]"),
    ("{{.Sizes}} {{index .Sizes 1}}", "[1.5 2] 2"),
    ("{{1e6}} {{100000.0}} {{1234567.0}} {{0.00001}} {{json 1e6}}", "1e+06 100000 1.234567e+06 1e-05 1000000"),
    ('{{len "héllo"}} {{truncate "héllo" 3}}', "6 hé"),  # Go counts a string's bytes
    ("{{.Nothing}}|{{.NoSuchKey}}|{{index .Config.Labels \"nope\"}}", "<no value>|<no value>|<no value>"),
    ("{{json .Nothing}} {{json .State.Running}} {{json 3.0}}", "null false 3"),
    # literal text, variables, pipelines, $
    ("id={{.Id}};", "id=4fa6e0f0c678;"),
    ("{{$n := .Name}}{{$n}}{{$n}}", "/boring_feynman/boring_feynman"),
    ("{{.Config.Image | upper | printf \"<%s>\"}}", "<BUSYBOX:LATEST>"),
    ("{{range .Config.Cmd}}{{$.Id}}:{{.}} {{end}}", "4fa6e0f0c678:sh 4fa6e0f0c678:-c 4fa6e0f0c678:exit 3 "),
    ("{{range $i, $v := .Config.Cmd}}{{$i}}={{$v}},{{end}}", "0=sh,1=-c,2=exit 3,"),
    ("{{range $k, $v := .Config.Labels}}{{$k}}:{{$v}} {{end}}", "team:a tier:web "),
    ("{{range .Nothing}}x{{else}}none{{end}}|{{range .Config.Cmd}}{{else}}none{{end}}|", "none||"),
    ("{{with .State}}{{.Status}}{{end}} {{with .Nothing}}x{{else}}empty{{end}}", "exited empty"),
    ("{{(.State).ExitCode}}", "3"),
    # if / else if / else, comparisons, and/or/not
    ("{{if .State.Running}}up{{else}}down{{end}}", "down"),
    ("{{if eq .State.ExitCode 0}}ok{{else if eq .State.ExitCode 3 4}}three or four{{else}}other{{end}}", "three or four"),
    ("{{if ne .State.Status \"running\"}}stopped{{end}}", "stopped"),
    ("{{lt 1 2}} {{le 2 2}} {{gt \"b\" \"a\"}} {{ge 1.5 2}}", "true true true false"),
    ("{{and 1 0 2}} {{or 0 \"\" \"x\"}} {{not 0}} {{or 0 .Nothing}}", "0 x true <no value>"),
    ("{{if and .Nothing .Nothing.Deeper}}x{{else}}short-circuit{{end}}", "short-circuit"),
    ("{{len .Config.Cmd}} {{len .Config.Labels}} {{len .Name}}", "3 2 15"),
    # printf, print
    ('{{printf "%-8s|%5d|%q|%v|%.2f|%x|%t|%%" .Config.Image 42 .Name .Config.Cmd 3.14159 255 true}}',
     'busybox:latest|   42|"/boring_feynman"|[sh -c exit 3]|3.14|ff|true|%'),
    ('{{printf "%d"}} {{printf "%d" "x"}}', "%!d(MISSING) %!d(string=x)"),
    ('{{printf "%q|%x|%X" .Config.Cmd "hi" "hi"}}', '["sh" "-c" "exit 3"]|6869|6869'),
    ('{{print 1 2 "a" "b" 3}}', "1 2ab3"),
    # trim markers, strings with escapes, raw strings, numbers
    ("a  {{- .Id -}}  \n b", "a4fa6e0f0c678b"),
    ('{{"tab\\there \\u00e9 \\x41 \\"q\\""}}', 'tab\there é A "q"'),
    ("{{`C:\\dir\\x41`}}", "C:\\dir\\x41"),  # a raw string keeps its backslashes
    ("{{0x1f}} {{1_000}} {{-2}} {{1.5}} {{1e3}} {{true}} {{nil}}", "31 1000 -2 1.5 1000 true <no value>"),
])
def test_template_prints_what_go_prints(template, expected):
    assert out(template) == expected


def test_two_character_tab_and_newline_are_what_docker_reads_them_as():
    """`--format '{{.ID}}\\t{{.Names}}'` in single quotes reaches us as backslash-t: docker
    turns it into a tab (and \\n into a newline) before parsing, strings included."""
    assert out(r"{{.Id}}\t{{.Name}}\n") == "4fa6e0f0c678\t/boring_feynman\n"
    assert out(r'{{printf "%s\n" .Id}}') == "4fa6e0f0c678\n"
    assert Template("  {{.Id}}  ").execute(INSPECT) == "4fa6e0f0c678"  # as docker, the spaces around are trimmed


PS_ROW = {"ID": "4fa6e0f0c678", "Names": "web", "Label": lambda key: {"com.example.team": "a"}.get(key, "")}
PS_HEADERS = {"ID": "CONTAINER ID", "Names": "NAMES", "Label": lambda key: key.rsplit(".", 1)[-1].upper()}


def row(**values) -> Fields:
    return Fields.of({**PS_ROW, **values})


def test_a_struct_field_it_lacks_is_an_error_that_names_its_fields():
    """docker's ps row is a Go struct: `{{.Nmaes}}` fails there, not prints <no value>; the
    error should say which fields there are."""
    with pytest.raises(TemplateError) as err:
        Template("{{.ID}} {{.Nmaes}}").execute(row())
    assert str(err.value) == (
        "template '{{.ID}} {{.Nmaes}}': at <.Nmaes>: can't evaluate field Nmaes; the fields are ID, Names, Label"
    )


def test_methods_take_arguments_and_plain_fields_refuse_them():
    assert Template('{{.Label "com.example.team"}}|{{.Label "none"}}').execute(row()) == "a|"
    for template, problem in [('{{.ID "x"}}', "ID is not a method but has arguments"),
                              ("{{.Label}}", "wrong number of args for Label: got 0")]:
        with pytest.raises(TemplateError, match=problem):
            Template(template).execute(row())


def test_json_of_a_struct_is_its_fields_sorted_without_methods():
    assert Template("{{json .}}").execute(row()) == '{"ID":"4fa6e0f0c678","Names":"web"}'
    assert Template("json").execute(row()) == '{"ID":"4fa6e0f0c678","Names":"web"}'  # docker's --format json


def test_table_prints_a_header_row_and_aligns_columns_as_docker():
    """docker's tabwriter: each column as wide as its widest cell plus 3, at least 10; the
    header comes from the same template applied to the column titles."""
    rows = [row(), row(ID="0123456789ab", Names="a-much-longer-name")]
    text = Template(r'table {{.ID}}\t{{.Names}}\t{{.Label "com.example.team"}}').render(rows, PS_HEADERS)
    assert text == (
        "CONTAINER ID   NAMES                TEAM\n"
        "4fa6e0f0c678   web                  a\n"
        "0123456789ab   a-much-longer-name   a\n"
    )
    # literal text is part of the header, and docker's header functions pass titles through
    text = Template(r"table id: {{.ID | lower}}\t{{upper .Names}}").render([row()], PS_HEADERS)
    assert text == "id: CONTAINER ID   NAMES\nid: 4fa6e0f0c678   WEB\n"
    assert Template(r"table {{.ID}}\t{{.Names}}").render([], PS_HEADERS) == "CONTAINER ID   NAMES\n"


def test_an_error_in_the_header_row_ends_it_there_as_dockers_does():
    """docker ignores an error while it prints a table's header (the titles are strings, so
    `eq .ExitCode 0` fails there) and prints what came before; the rows still run."""
    text = Template(r"table {{.ID}}\t{{if eq .Code 0}}ok{{end}}").render([row(Code=0)], {**PS_HEADERS, "Code": "CODE"})
    assert text == "CONTAINER ID   \n4fa6e0f0c678   ok\n"


def test_tabwriter_columns_are_blocks_of_adjacent_lines():
    """Go's text/tabwriter: a line with fewer cells ends the column's block, and the text
    after the last tab of a line is not part of any column."""
    assert tabwriter("a\tb\tc\nlonger-cell\tb\tc\nno tabs here\nx\ty\n") == (
        "a" + " " * 13 + "b" + " " * 9 + "c\n"  # column 0: 11 + 3; column 1: the minimum, 10
        "longer-cell" + " " * 3 + "b" + " " * 9 + "c\n"
        "no tabs here\n"  # ends the block: the next line's column 0 is measured on its own
        "x" + " " * 9 + "y\n"
    )
    assert tabwriter("a\t\tc\n") == "a" + " " * 19 + "c\n"  # an empty cell still pads to the minimum


def test_plain_format_is_one_line_per_row_without_alignment():
    assert Template(r"{{.ID}}\t{{.Names}}").render([row(), row(Names="db")]) == "4fa6e0f0c678\tweb\n4fa6e0f0c678\tdb\n"


@pytest.mark.parametrize("template, problem", [
    ("{{.ID", "unclosed action"),
    ("{{if .ID}}x", "{{if}} without {{end}}"),
    ("{{end}}", "unexpected {{end}}"),
    ("{{range .ID}}{{else}}{{else}}{{end}}", "{{else}} in range"),
    ("{{nosuch .ID}}", 'function "nosuch" not defined'),
    ("{{}}", "missing value for command"),
    ("{{(.ID}}", "unclosed left paren"),
    ("{{.ID)}}", "unexpected right paren"),
    ("{{.ID ! }}", "unexpected '!' in command"),
    ('{{define "x"}}{{end}}', "{{define}} is not supported"),
    ("{{$nope}}", "undefined variable: $nope"),
    ("{{.Names.Deeper}}", "can't evaluate field Deeper in type string"),
    ('{{eq .ID 1}}', "incompatible types for comparison: string and int"),
    ("{{index .Names 1}}", "error calling index"),
    ("{{range .ID}}{{end}}", "range can't iterate over 4fa6e0f0c678"),
    ("{{. 1}}", "can't give argument to non-function ."),
    ("{{upper}}", "wrong number of args for upper: got 0"),
])
def test_bad_templates_fail_with_one_line_naming_the_template_and_the_problem(template, problem):
    with pytest.raises(TemplateError) as err:
        Template(template).execute(row())
    message = str(err.value)
    assert message.startswith(f"template {template!r}: ") and problem in message, message
    assert "\n" not in message


def test_go_quote_escapes_as_strconv_quote():
    """.Command is docker's strconv.Quote of the command line."""
    assert go_quote('sh -c "echo hi" \\ é') == '"sh -c \\"echo hi\\" \\\\ é"'
    assert go_quote("a\tb\nc\x07\x00") == '"a\\tb\\nc\\a\\x00"'


# ----------------------------------------------------------------------------- against the docker CLI

DOCKER = shutil.which("docker")


@pytest.fixture
def containers(docker_client, test_image):
    """Two exited containers made for the comparison, removed afterwards."""
    if DOCKER is None:
        pytest.skip("the docker CLI is not installed")
    made = []
    for name, labels, cmd in [("conveyor-fmt-a", {"team": "a", "tier": "web"}, ["sh", "-c", "exit 3"]),
                              ("conveyor-fmt-longer-name", {"team": "b"}, ["true"])]:
        c = docker_client.containers.create(test_image, cmd, name=f"{name}-{id(made)}", labels={**labels, "conveyor-fmt-test": "1"})
        made.append(c)
    yield made
    for c in made:
        c.remove(force=True)


INSPECT_TEMPLATES = [
    "{{.Name}} {{.State.Running}} {{.State.ExitCode}} {{.State.Status}}",
    '{{index .Config.Labels "team"}}', "{{json .Config.Labels}}", "{{.Config.Cmd}}", "{{json .Config.Cmd}}",
    "{{range $k, $v := .Config.Labels}}{{$k}}={{$v}};{{end}}", '{{join .Config.Cmd " "}}', '{{split .Config.Image ":"}}',
    "{{upper .Name}} {{title .Name}} {{len .Config.Cmd}}", "{{if .State.Running}}up{{else}}down{{end}}",
    '{{printf "%s|%5d|%-12s|%q" .Name .State.ExitCode .State.Status .Config.Image}}',
    "{{range $i, $a := .Config.Cmd}}{{if $i}},{{end}}{{$a}}{{end}}", "{{with .Config}}{{.Image}}{{end}}",
    "{{if and .Config.Labels (eq .State.ExitCode 0)}}zero{{else}}nonzero{{end}}",
    '{{title "hello wORLD_x-y.z"}} {{pad "" 2 2}}|{{pad "a" 1 0}}| {{truncate "abcdef" 3}} {{printf "%q %v" "a\\tb" 1.5}}',
    '{{printf "%q %x %5.2f|%-4d|" .Config.Cmd "hi" 3.14159 7}} {{1e6}} {{100000.0}} {{0.5}}',
    '{{print 1 2 "x" 3 "y"}} {{len "héllo"}} {{index .Config.Cmd 0}} {{or "" "dflt"}} {{not .State.Running}}',
]


@pytest.mark.parametrize("template", INSPECT_TEMPLATES)
def test_same_text_as_docker_inspect(containers, docker_client, template):
    for c in containers:
        expected = subprocess.run([DOCKER, "inspect", "--format", template, c.id], capture_output=True, text=True,
                                  check=True).stdout
        assert Template(template).execute(docker_client.api.inspect_container(c.id)) + "\n" == expected


def test_same_table_as_docker_ps(containers):
    """The row values are docker's own (its `{{json .}}`); the header, the alignment and the
    text around the fields must come out byte for byte as `docker ps --format` prints them."""
    template = r"table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.Names}}\tstate={{.State}}"
    args = [DOCKER, "ps", "-a", "--filter", "label=conveyor-fmt-test"]
    rows = [json.loads(line) for line in subprocess.run([*args, "--format", "{{json .}}"], capture_output=True,
                                                         text=True, check=True).stdout.splitlines()]
    assert len(rows) == 2
    headers = {"ID": "CONTAINER ID", "Image": "IMAGE", "Command": "COMMAND", "Names": "NAMES", "State": "STATE"}
    expected = subprocess.run([*args, "--format", template], capture_output=True, text=True, check=True).stdout
    assert Template(template).render([Fields.of(r) for r in rows], headers) == expected
