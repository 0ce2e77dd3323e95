"""A packetbeat 8 protocol config carries over: every option packetbeat documents for a
protocol we decode is either implemented or refused as "not supported yet".

The option lists below are packetbeat 8's, typed in from its documentation
(packetbeat-http-options, packetbeat-dns-options, configuration-protocols); they are
not read from wirebeat, so a dropped option fails here.
"""
from __future__ import annotations

import pytest

from wirebeat.config import ConfigError, load_config
from wirebeat.registry import discover

SPECS = [r.spec for r in discover()]

PACKETBEAT_COMMON = {"enabled": "true", "ports": "[80]", "send_request": "true",
                     "send_response": "true", "transaction_timeout": "5s"}
PACKETBEAT_SPECIFIC = {
    "http": {"send_headers": "[User-Agent]", "send_all_headers": "true", "split_cookie": "true",
             "real_ip_header": "X-Forwarded-For", "hide_keywords": "[pass]",
             "redact_authorization": "true", "redact_headers": "[cookie]",
             "include_body_for": "[text/html]", "include_request_body_for": "[json]",
             "include_response_body_for": "[json]", "decode_body": "false",
             "max_message_size": "1048576"},
    "dns": {"include_authorities": "true", "include_additionals": "true"},
    "dhcpv4": {},
    "sip": {"parse_authorization": "false", "parse_body": "false", "keep_original": "false"},
}
NOT_YET = {"fields": "{env: prod}", "fields_under_root": "true", "tags": "[a]",
           "processors": "[{drop_event: {}}]", "keep_null": "true", "index": "custom"}


@pytest.mark.parametrize("protocol", sorted(PACKETBEAT_SPECIFIC))
def test_every_packetbeat_option_of_a_protocol_we_decode_is_accepted(protocol: str) -> None:
    options = dict(PACKETBEAT_COMMON, **PACKETBEAT_SPECIFIC[protocol])
    overrides = [f"wirebeat.protocols.{protocol}.{k}={v}" for k, v in options.items()]
    config = load_config(None, overrides, SPECS)
    for key in PACKETBEAT_SPECIFIC[protocol]:
        assert f"wirebeat.protocols.{protocol}.{key}" in config.values


def test_icmp_takes_enabled() -> None:
    load_config(None, ["wirebeat.protocols.icmp.enabled=false"], SPECS)


@pytest.mark.parametrize("option", sorted(NOT_YET))
@pytest.mark.parametrize("protocol", ["http", "dns", "dhcpv4", "icmp"])
def test_packetbeat_options_not_implemented_are_refused_as_not_supported_yet(
        protocol: str, option: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, [f"wirebeat.protocols.{protocol}.{option}={NOT_YET[option]}"], SPECS)
    message = str(err.value)
    assert "not supported yet" in message and option in message and "unknown" not in message


def test_a_mistyped_key_is_still_unknown() -> None:
    with pytest.raises(ConfigError, match="unknown config key 'wirebeat.protocols.http.hide_keyword'"):
        load_config(None, ["wirebeat.protocols.http.hide_keyword=[a]"], SPECS)
