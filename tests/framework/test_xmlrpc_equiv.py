"""smlib.protocol.xmlrpc is equivalent to the standard library's xmlrpc.client.

Property tests: random nested values (unicode, markup characters, empty
strings, nil, big and small ints, floats, bytes) decode identically with
both, and what smlib writes xmlrpc.client reads back unchanged.
"""

import re
import xmlrpc.client as stdlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smlib.protocol import xmlrpc

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Characters XML 1.0 can carry (no C0 controls but tab/LF/CR, no surrogates,
# no U+FFFE/U+FFFF): the domain where a lossless round trip is possible.
xml_text = st.text(
    st.characters(
        blacklist_categories=("Cs",),
        blacklist_characters=[chr(c) for c in range(0x20) if c not in (9, 10, 13)]
        + ["\ufffe", "\uffff"],
    )
)
markup_text = st.text(st.sampled_from(list("&<>\"']]>;#x\r\n\t é€😀")), max_size=20)
strings = st.one_of(xml_text, markup_text)
int32 = st.integers(min_value=xmlrpc.MININT, max_value=xmlrpc.MAXINT)
scalars = st.one_of(
    st.none(), st.booleans(), int32, strings, st.binary(max_size=64),
    st.floats(allow_nan=False),
)
# xmlrpc.client writes a methodName unescaped, and none at all when empty.
method_names = st.text(st.characters(whitelist_categories=("L", "Nd")) | st.sampled_from("_."),
                       min_size=1)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.dictionaries(strings, inner, max_size=5),
    ),
    max_leaves=25,
)


def stdlib_decode(text):
    params, method = stdlib.loads(text, use_builtin_types=True)
    return method, params


def stdlib_dump_response(value):
    return stdlib.dumps((value,), methodresponse=True, allow_none=True)


@SETTINGS
@given(values)
def test_decodes_stdlib_responses_identically(value):
    text = stdlib_dump_response(value)
    assert xmlrpc.loads_response(text) == stdlib_decode(text)[1][0]


@SETTINGS
@given(st.lists(values, max_size=3), method_names)
def test_decodes_stdlib_calls_identically(params, method):
    text = stdlib.dumps(tuple(params), method, allow_none=True)
    name, decoded = xmlrpc.loads_call(text)
    std_params, std_method = stdlib.loads(text, use_builtin_types=True)
    assert (name, decoded) == (std_method, std_params)


@SETTINGS
@given(values)
def test_stdlib_reads_back_what_we_write(value):
    text = xmlrpc.dumps_response(value)
    assert stdlib_decode(text)[1] == (value,)
    assert xmlrpc.loads_response(text) == value


@SETTINGS
@given(st.lists(values, max_size=3), strings)
def test_calls_we_write_round_trip_through_stdlib(params, method):
    text = xmlrpc.dumps_call(method, params)
    assert stdlib_decode(text) == (method, tuple(params))
    assert xmlrpc.loads_call(text) == (method, tuple(params))


@SETTINGS
@given(st.integers(), st.sampled_from(["int", "i4", "i8", "i1", "i2", "biginteger"]))
def test_large_ints_decode_like_stdlib(number, tag):
    text = (
        "<?xml version='1.0'?><methodResponse><params><param>"
        f"<value><{tag}>{number}</{tag}></value></param></params></methodResponse>"
    )
    assert xmlrpc.loads_response(text) == stdlib_decode(text)[1][0] == number


@given(st.integers().filter(lambda n: not xmlrpc.MININT <= n <= xmlrpc.MAXINT))
def test_out_of_range_ints_refused_like_stdlib(number):
    with pytest.raises(OverflowError):
        stdlib.dumps((number,), methodresponse=True)
    with pytest.raises(OverflowError):
        xmlrpc.dumps_response(number)


@SETTINGS
@given(st.integers(min_value=-(2**31), max_value=2**31 - 1), strings)
def test_faults_read_by_stdlib(code, message):
    with pytest.raises(stdlib.Fault) as caught:
        stdlib.loads(xmlrpc.dumps_fault(code, message))
    assert (caught.value.faultCode, caught.value.faultString) == (code, message)
    with pytest.raises(xmlrpc.Fault) as ours:
        xmlrpc.loads_response(xmlrpc.dumps_fault(code, message))
    assert (ours.value.code, ours.value.string) == (code, message)


@SETTINGS
@given(st.text())
def test_text_xml_cannot_carry_is_replaced_not_fatal(text):
    """Control characters or lone surrogates (undecodable file names in an
    error message) must still give a response xapi can parse."""
    out = stdlib_decode(xmlrpc.dumps_response(text))[1][0]
    assert len(out) == len(text)
    for got, sent in zip(out, text):
        assert got == sent or got == "\ufffd"


def test_bare_values_and_whitespace_like_stdlib():
    # xapi prints strings as bare <value>s; pretty printers add blanks.
    text = (
        '<?xml version="1.0"?><methodCall><methodName>sr_scan</methodName><params><param>'
        "<value><struct><member><name>a</name><value>OpaqueRef:x</value></member>"
        "<member><name>e</name><value></value></member>"
        "<member><name>s</name><value>  <string> pad </string>  </value></member>"
        "<member><name>n</name><value><ex:nil xmlns:ex='urn:x'/></value></member>"
        "</struct></value></param></params></methodCall>"
    )
    expected = {"a": "OpaqueRef:x", "e": "", "s": " pad ", "n": None}
    assert xmlrpc.loads_call(text) == ("sr_scan", (expected,))
    assert stdlib_decode(text) == ("sr_scan", (expected,))


def test_escaping_survives_round_trip():
    tricky = "a&b<c>d]]>e\r\nf\"g'h"
    text = xmlrpc.dumps_response(tricky)
    assert "&#13;" in text and "<c>" not in text
    assert stdlib_decode(text)[1][0] == tricky


@pytest.mark.parametrize(
    "value",
    [object(), {1: "x"}, {"k": {2: "y"}}, [set()]],
    ids=["object", "int key", "nested int key", "set"],
)
def test_unmarshallable_values_are_type_errors(value):
    with pytest.raises(TypeError):
        xmlrpc.dumps_response(value)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not xml",
        "<methodCall>",
        "<methodResponse><params/></methodResponse>",
        "<methodCall><params/></methodCall>",  # no methodName
        "<methodCall><methodName>x</methodName><params><param><value><int>x</int>"
        "</value></param></params></methodCall>",
        "<methodCall><methodName>x</methodName><params><param><value><boolean>2</boolean>"
        "</value></param></params></methodCall>",
        "<methodCall><methodName>x</methodName><params><param><value><i4>1</i4><i4>2</i4>"
        "</value></param></params></methodCall>",
        "<methodCall><methodName>x</methodName><params><param><value><struct><value>1</value>"
        "</struct></value></param></params></methodCall>",
        "<methodCall><methodName>x</methodName><params><param><value><blob/></value>"
        "</param></params></methodCall>",
        "<methodCall><methodName>x</methodName></methodCall><junk/>",
        "<!DOCTYPE x [<!ENTITY a 'b'>]><methodCall><methodName>&a;</methodName></methodCall>",
    ],
)
def test_malformed_calls_raise_xmlrpc_error(text):
    with pytest.raises(xmlrpc.XMLRPCError):
        xmlrpc.loads_call(text)


TAG = re.compile(r"<(/?)([^>\s/?!]+)[^>]*?(/?)>")


def anywhere(text: str):
    """(start, end) of any substring: mostly refusals."""
    return st.integers(0, len(text)).flatmap(
        lambda a: st.tuples(st.just(a), st.integers(a, len(text))))


def whole_parts(text: str):
    """(start, end) of one tag, one whole element, or from the start of one
    of those to the end of another: what is left is often well-formed, and a decoder that goes
    wrong quietly (a value dropped, moved or retyped) shows there."""
    tags, elements, stack = [], [], []
    for m in TAG.finditer(text):
        tags.append(m.span())
        if m.group(3):
            elements.append(m.span())
        elif m.group(1):
            if stack:
                elements.append((stack.pop(), m.end()))
        else:
            stack.append(m.start())
    spans = tags + elements
    runs = st.tuples(st.sampled_from(spans), st.sampled_from(spans)).map(
        lambda pair: (min(pair[0][0], pair[1][0]), max(pair[0][1], pair[1][1])))
    return st.one_of(st.sampled_from(spans), runs)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mangled_documents_decode_like_stdlib_or_raise_xmlrpc_error(data):
    """Whatever is cut out of a valid call, the decoder answers XMLRPCError
    (never another exception, which smapi would report as 1200) or what the
    standard library decodes from the same text; nothing cut out, the value
    sent."""
    value = data.draw(values)
    text = stdlib.dumps((value,), "m", allow_none=True)
    start, end = data.draw(st.one_of(anywhere(text), whole_parts(text)))
    mangled = text[:start] + text[end:]
    try:
        decoded = xmlrpc.loads_call(mangled)
    except xmlrpc.XMLRPCError:
        assert start != end, "the intact call was refused"
        return
    assert decoded == stdlib_decode(mangled)
    if start == end and "\r" not in text:  # XML reads a raw CR as LF
        assert decoded == ("m", (value,))


xapi_values = st.recursive(
    st.one_of(st.booleans(), int32, strings),
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(strings, inner, max_size=5)
    ),
    max_leaves=25,
)


@SETTINGS
@given(st.dictionaries(strings, xapi_values, max_size=8))
def test_xapi_printed_calls_decode_like_stdlib(struct):
    """xapi's printer: bare-string <value>s, no whitespace, " and ' escaped."""
    from helpers.xapi_harness import xapi_xml

    text = xapi_xml(struct, "vdi_revert")
    assert xmlrpc.loads_call(text) == stdlib_decode(text)
    if "\r" not in text:  # xapi leaves CR raw, and XML reads it as LF
        assert xmlrpc.loads_call(text) == ("vdi_revert", (struct,))
