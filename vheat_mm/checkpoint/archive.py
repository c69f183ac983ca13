"""Checks of a ``torch.save`` zip archive before ``torch.load`` reads it.

``torch.save`` stores its records uncompressed, and ``torch.load`` inflates a compressed one
whatever its size and does not check the records' CRC-32. So a small file with one deflated
record of gigabytes would fill the memory, and a flipped bit in a tensor would load as a wrong
weight. :func:`check_archive` refuses a compressed record, a record larger than the file can
hold, and a record whose bytes do not match the CRC-32 the archive lists for them, naming the
file and the record; it reads each record once, in blocks.

A pickle can also build, from a few bytes, a tuple whose parts are shared and nested in each
other: its size, and the time Python takes to hash it as a dict key, grow exponentially with
its depth. :func:`check_sharing` follows the pickle's opcodes (without building anything) and
refuses a tuple larger than its pickle can spell out without sharing.
"""
from __future__ import annotations

import os
import pickletools
import struct
import zipfile
import zlib

from .errors import CheckpointError
from .messages import shown

__all__ = ['ZIP_MAGIC', 'check_archive', 'check_sharing']

ZIP_MAGIC = b'PK\x03\x04'  # how a zip archive, and so a file torch.save writes, starts
_LOCAL_HEADER = struct.Struct('<4s22xHH')  # signature, ..., file name length, extra length
_BLOCK = 1 << 22
_EXPECTED = 'expected a complete file written by torch.save'
_SHARED_ITEMS = 1 << 20  # items a tuple may have beyond one per byte of its pickle
_MEMO_PUT = {'PUT', 'BINPUT', 'LONG_BINPUT'}
_MEMO_GET = {'GET', 'BINGET', 'LONG_BINGET'}
_METHODS = {zipfile.ZIP_DEFLATED: 'deflate', zipfile.ZIP_BZIP2: 'bzip2',
            zipfile.ZIP_LZMA: 'lzma'}


def check_archive(path: str, name: str | None = None) -> None:
    """Raise :class:`CheckpointError` naming the file (``name``, by default ``path``) and the
    record where the zip archive ``path`` holds a compressed record, a record larger than the
    file allows, or a record whose CRC-32 does not match; or where its zip directory cannot be
    read (a truncated file). A file that is not a zip archive is left to ``torch.load``."""
    name = name or path
    with open(path, 'rb') as file:
        if file.read(len(ZIP_MAGIC)) != ZIP_MAGIC:
            return
        size = os.fstat(file.fileno()).st_size
        try:
            with zipfile.ZipFile(file) as archive:
                records = archive.infolist()
        except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError):
            raise CheckpointError(f'cannot read checkpoint {name}: the zip archive is truncated '
                                  f'(an interrupted download or copy?); {_EXPECTED}') from None
        for record in records:
            _check_size(record, size, name)
        buffer = bytearray(_BLOCK)
        for record in records:
            start = _check_crc(file, record, size, name, buffer)
            if record.filename.endswith('/data.pkl'):
                file.seek(start)
                check_sharing(file.read(record.file_size), name,
                              f'its pickle {shown(record.filename)}')


def check_sharing(data: bytes, name: str, what: str = 'its pickle') -> None:
    """Raise :class:`CheckpointError` naming ``name`` (the file) and ``what`` (the pickle in
    it) where the pickle ``data`` builds a tuple
    of more items (counting shared parts each time they occur) than one per byte of ``data``
    plus :data:`_SHARED_ITEMS`. A pickle these steps cannot follow is left to the unpickler."""
    limit = len(data) + _SHARED_ITEMS
    stack: list[int] = []  # the items of each object on the unpickler's stack
    marks: list[int] = []
    memo: dict[int, int] = {}
    try:
        for opcode, arg, _ in pickletools.genops(data):
            if opcode.name in _MEMO_PUT or opcode.name == 'MEMOIZE':
                memo[len(memo) if arg is None else arg] = stack[-1]
            elif opcode.name in _MEMO_GET:
                stack.append(memo[arg])
            elif opcode.name == 'MARK':
                marks.append(len(stack))
            else:
                items = 1
                before = opcode.stack_before
                if pickletools.markobject in before:
                    start = marks.pop()
                    items += sum(stack[start:])
                    del stack[start:]
                    before = before[:before.index(pickletools.markobject)]
                for _ in before:
                    items += stack.pop()
                if items > limit:
                    raise CheckpointError(
                        f'refusing to load {name}: {what} builds a value of more than '
                        f'{limit} items from {len(data)} bytes (the same parts nested in each '
                        f'other: hashing or printing it would take exponentially long)')
                stack.extend([items] * len(opcode.stack_after))
    except CheckpointError:
        raise
    except (ValueError, IndexError, KeyError):  # not a pickle these steps can follow
        return


def _check_size(record: zipfile.ZipInfo, size: int, name: str) -> None:
    what = f'{name}: its record {shown(record.filename)}'
    if record.compress_type != zipfile.ZIP_STORED:
        method = _METHODS.get(record.compress_type, f'method {record.compress_type}')
        raise CheckpointError(
            f'refusing to load {what} is compressed ({method}, {record.compress_size} bytes that '
            f'would inflate to {record.file_size}); torch.save never compresses its records, so '
            f'torch.save did not write this file')
    if record.file_size != record.compress_size \
            or record.header_offset + record.file_size > size:
        raise CheckpointError(
            f'refusing to load {what} claims {record.file_size} bytes ({record.compress_size} '
            f'stored at offset {record.header_offset}), more than the file of {size} bytes holds '
            f'there; {_EXPECTED}')


def _check_crc(file, record: zipfile.ZipInfo, size: int, name: str, buffer: bytearray) -> int:
    """Check the CRC-32 of ``record``; returns where its bytes start in ``file``."""
    what = f'{name}: its record {shown(record.filename)}'
    file.seek(record.header_offset)
    header = file.read(_LOCAL_HEADER.size)
    if len(header) < _LOCAL_HEADER.size or header[:4] != ZIP_MAGIC:
        raise CheckpointError(f'cannot read checkpoint {what} has no zip header at offset '
                              f'{record.header_offset} (a damaged file?); {_EXPECTED}')
    name_length, extra_length = _LOCAL_HEADER.unpack(header)[1:]
    start = record.header_offset + _LOCAL_HEADER.size + name_length + extra_length
    if start + record.file_size > size:
        raise CheckpointError(f'cannot read checkpoint {what} ends past the end of the file '
                              f'(a truncated file?); {_EXPECTED}')
    file.seek(start)
    view, left, crc = memoryview(buffer), record.file_size, 0
    while left:
        count = file.readinto(view[:min(left, _BLOCK)])
        if not count:
            raise CheckpointError(f'cannot read checkpoint {what} ends past the end of the '
                                  f'file (a truncated file?); {_EXPECTED}')
        crc = zlib.crc32(view[:count], crc)
        left -= count
    if crc != record.CRC:
        raise CheckpointError(
            f'cannot read checkpoint {what} does not match its CRC-32 (listed {record.CRC:08x}, '
            f'read {crc:08x}): the file is damaged (a changed byte on a disk or in a copy?); '
            f'{_EXPECTED}')
    return start
