"""MIME type of a body from its first bytes, for http.request/response.mime_type.

packetbeat's decoder sets no MIME type; the packetbeat.yml it ships runs two
`detect_mime_type` processors over the captured bodies. Those look the bytes up
in a table of binary signatures first, then fall back to the WHATWG sniffing
rules that Go's `http.DetectContentType` implements, and set nothing when all
that says is "application/octet-stream". This module follows the same order for
the types HTTP bodies commonly carry (facts from the WHATWG MIME Sniffing
standard and the formats' own magic numbers). Pure function, no state.
"""
from __future__ import annotations

__all__ = ["sniff_mime_type"]

SNIFF_BYTES = 512          # WHATWG: the resource header is at most 512 bytes

# Binary signatures: (prefix, offset, MIME type), first match wins.
_SIGNATURES: tuple[tuple[bytes, int, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", 0, "image/png"),
    (b"\xff\xd8\xff", 0, "image/jpeg"),
    (b"GIF87a", 0, "image/gif"),
    (b"GIF89a", 0, "image/gif"),
    (b"BM", 0, "image/bmp"),
    (b"\x00\x00\x01\x00", 0, "image/x-icon"),
    (b"%PDF-", 0, "application/pdf"),
    (b"\x1f\x8b", 0, "application/gzip"),
    (b"PK\x03\x04", 0, "application/zip"),
    (b"Rar!\x1a\x07", 0, "application/vnd.rar"),
    (b"7z\xbc\xaf\x27\x1c", 0, "application/x-7z-compressed"),
    (b"BZh", 0, "application/x-bzip2"),
    (b"\xfd7zXZ\x00", 0, "application/x-xz"),
    (b"\x28\xb5\x2f\xfd", 0, "application/zstd"),
    (b"\x00asm", 0, "application/wasm"),
    (b"wOFF", 0, "font/woff"),
    (b"wOF2", 0, "font/woff2"),
    (b"OggS", 0, "audio/ogg"),
    (b"ID3", 0, "audio/mpeg"),
    (b"%!PS-Adobe-", 0, "application/postscript"),
)

# WHATWG "HTML" patterns, matched case-insensitively after leading whitespace and
# followed by a space or '>' (a "tag-terminating byte").
_HTML_TAGS = (b"<!doctype html", b"<html", b"<head", b"<script", b"<iframe", b"<h1", b"<div",
              b"<font", b"<table", b"<a", b"<style", b"<title", b"<b", b"<body", b"<br",
              b"<p", b"<!--")
_WHITESPACE = b"\t\n\x0c\r "
# WHATWG "binary data byte": control bytes that never occur in text.
_BINARY = frozenset(list(range(0x00, 0x09)) + [0x0B] + list(range(0x0E, 0x1B)) + list(range(0x1C, 0x20)))


def sniff_mime_type(body: bytes) -> str:
    """The MIME type of `body`, or "" when it is empty or only known as octet-stream."""
    head = body[:SNIFF_BYTES]
    if not head:
        return ""
    for magic, offset, mime in _SIGNATURES:
        if head.startswith(magic, offset):
            return mime
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "image/webp"
    if head.startswith(b"RIFF") and head[8:12] == b"WAVE":
        return "audio/wav"
    if head[4:8] == b"ftyp":
        return "video/mp4"
    if head.startswith(b"\xfe\xff"):
        return "text/plain; charset=utf-16be"
    if head.startswith(b"\xff\xfe"):
        return "text/plain; charset=utf-16le"
    if head.startswith(b"\xef\xbb\xbf"):
        return "text/plain; charset=utf-8"
    text = head.lstrip(_WHITESPACE)
    lowered = text[:16].lower()
    for tag in _HTML_TAGS:
        if lowered.startswith(tag) and len(text) > len(tag) and text[len(tag)] in b" >":
            return "text/html; charset=utf-8"
    if text.startswith(b"<?xml"):
        return "text/xml; charset=utf-8"
    if any(byte in _BINARY for byte in head):
        return ""                   # application/octet-stream: the processor sets nothing
    return "text/plain; charset=utf-8"
