"""A CSV reader that never merges rows: each physical line is one row (unless the source
declares `multiline_values: true`), and a line whose quoting or field count is wrong is
rejected with its line number instead of swallowing the lines after it or shifting values
into another row's columns.

Lines without a quote character are split by counting separators (vectorised); lines with
one are parsed one by one with the `csv` module in strict mode, so a quote left open fails
on its own line. The good lines then go to pandas' C parser, restricted to the wanted
columns. A reject carries the line number, the reason and the field counts, never the
line's text (it may hold declared PII).
"""
from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from features.errors import MappingError
from features.schema import Reason

DIALECT_OPTIONS = ("sep", "delimiter", "quotechar", "escapechar", "doublequote", "skipinitialspace")
# options that change which lines are rows: the line checks below could not follow them
LINE_OPTIONS = ("header", "names", "skiprows", "skipfooter", "nrows", "comment", "lineterminator",
                "engine", "on_bad_lines", "index_col", "usecols", "dtype", "chunksize", "iterator")



@dataclass
class CsvRows:
    """Rows read from one CSV file: the frame (index = source row = line - 2) and the
    rejected lines (row, reason, detail)."""

    frame: pd.DataFrame
    rejects: pd.DataFrame


def csv_header(path: Path, options: dict, where: str) -> list[str]:
    """The column names of the file's first non-empty line."""
    _check_options(options, where)
    encoding = _encoding(options)
    try:
        with open(path, encoding=encoding, newline="") as f:
            first = next((line for line in f if line.strip()), "")
    except (UnicodeDecodeError, LookupError) as exc:
        raise _decode_error(where, path, encoding, exc) from None
    return _first_row([first.rstrip("\r\n")], _dialect(options), where)


def read_csv_rows(path: Path, columns: list[str], options: dict, where: str,
                  multiline_values: bool = False) -> CsvRows:
    """The wanted columns of every well-formed row, as text (empty cells missing)."""
    _check_options(options, where)
    dialect = _dialect(options)
    lines = _lines(path, options, where)
    if multiline_values:
        return _records(lines, columns, dialect, options, where)
    header_at = _first_filled(lines)
    header = _first_row(lines, dialect, where)
    body = pd.Series(lines[header_at + 1:], dtype="string")
    line_no = np.arange(header_at + 2, header_at + 2 + len(body))  # 1-based physical line numbers
    filled = (body.str.strip() != "").to_numpy(dtype=bool)
    body, line_no = body[filled].reset_index(drop=True), line_no[filled]
    fields, open_quote = _field_counts(body, dialect)
    wrong = ~open_quote & (fields != len(header))
    bad = open_quote | wrong
    detail = pd.Series(np.where(open_quote, "a quote is left open on this line",
                                fields.astype(str).astype(object) + f" fields, the header has {len(header)}"))
    rejects = pd.DataFrame({"row": line_no[bad] - 2, "reason": Reason.MALFORMED_ROW,
                            "detail": ("line " + pd.Series(line_no[bad].astype(str)) + ": "
                                       + detail[bad].reset_index(drop=True)).astype(object)})
    good = body[~bad]
    text = "\n".join([lines[header_at], *good.tolist()]) + "\n"
    frame = _pandas_read(text, columns, options, where)
    frame.index = pd.Index(line_no[~bad] - 2, dtype="int64")
    return CsvRows(frame=frame, rejects=rejects)


def _field_counts(body: pd.Series, dialect: dict) -> tuple[np.ndarray, np.ndarray]:
    """Fields per line, and whether a line's quoting is broken (a quote left open)."""
    quoted = body.str.contains(dialect["quotechar"], regex=False).to_numpy(dtype=bool)
    if dialect["escapechar"]:
        quoted |= body.str.contains(dialect["escapechar"], regex=False).to_numpy(dtype=bool)
    fields = body.str.count(re.escape(dialect["delimiter"])).to_numpy(dtype="int64") + 1
    broken = np.zeros(len(body), dtype=bool)
    if quoted.any():
        parsed = [_split_line(line, dialect) for line in body[quoted].tolist()]
        broken[quoted] = [p is None for p in parsed]
        fields[quoted] = [-1 if p is None else len(p) for p in parsed]
    return fields, broken


def _split_line(line: str, dialect: dict) -> list[str] | None:
    try:
        return next(csv.reader((line,), strict=True, **dialect))
    except (csv.Error, StopIteration):
        return None


def _records(lines: list[str], columns: list[str], dialect: dict, options: dict, where: str) -> CsvRows:
    """Quoted values may span lines: rows are csv records, numbered by their first line;
    a record whose field count differs from the header's is rejected."""
    reader = csv.reader(iter(lines), strict=True, **dialect)
    rows, starts, bad = [], [], []
    header: list[str] | None = None
    try:
        while True:
            start = reader.line_num + 1
            try:
                record = next(reader)
            except StopIteration:
                break
            if not record or record == [""]:
                continue
            if header is None:
                header = record
            elif len(record) == len(header):
                rows.append(record)
                starts.append(start)
            else:
                bad.append((start - 2, Reason.MALFORMED_ROW, f"line {start}: {len(record)} fields, the header has {len(header)}"))
    except csv.Error as exc:
        bad.append((reader.line_num - 2, Reason.MALFORMED_ROW, f"line {reader.line_num}: {exc} (the rest of the file is not read)"))
    if header is None:
        raise MappingError(f"{where}: the file is empty (no header line)")
    buffer = io.StringIO()
    csv.writer(buffer, **dialect).writerows([header, *rows])
    frame = _pandas_read(buffer.getvalue(), columns, options, where)
    frame.index = pd.Index(np.asarray(starts, dtype="int64") - 2, dtype="int64")
    return CsvRows(frame=frame, rejects=pd.DataFrame(bad, columns=["row", "reason", "detail"]))


def _pandas_read(text: str, columns: list[str], options: dict, where: str) -> pd.DataFrame:
    # strings throughout, so ids keep leading zeros and bad cells reach the rejects as written;
    # only empty cells are missing ("NA" may be a region, "None" a real value)
    rest = {k: v for k, v in options.items() if k != "encoding"}
    try:
        return pd.read_csv(io.StringIO(text), usecols=columns, dtype=str, keep_default_na=False,
                           na_values=[""], **rest)
    except (ValueError, pd.errors.ParserError) as exc:
        raise MappingError(f"{where}: cannot read: {str(exc).splitlines()[0]}") from None


def _lines(path: Path, options: dict, where: str) -> list[str]:
    encoding = _encoding(options)
    try:
        text = path.read_bytes().decode(encoding)
    except (UnicodeDecodeError, LookupError) as exc:
        raise _decode_error(where, path, encoding, exc) from None
    return [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]


def _encoding(options: dict) -> str:
    encoding = options.get("encoding") or "utf-8"
    # a byte-order mark is not part of the first column's name
    return "utf-8-sig" if encoding.replace("-", "").lower() == "utf8" else encoding


def _decode_error(where: str, path: Path, encoding: str, exc: Exception) -> MappingError:
    return MappingError(f"{where}: cannot read {path} as {encoding}: {str(exc).splitlines()[0]} "
                        f"(set sources.<name>.options.encoding)")


def _first_filled(lines: list[str]) -> int:
    for i, line in enumerate(lines):
        if line.strip():
            return i
    return len(lines)


def _first_row(lines: list[str], dialect: dict, where: str) -> list[str]:
    at = _first_filled(lines)
    if at == len(lines):
        raise MappingError(f"{where}: the file is empty (no header line)")
    header = _split_line(lines[at], dialect)
    if header is None:
        raise MappingError(f"{where}: the header line has a quote left open")
    return header


def _dialect(options: dict) -> dict:
    sep = options.get("sep", options.get("delimiter", ","))
    if not isinstance(sep, str) or len(sep) != 1:
        raise MappingError(f"sources.<name>.options.sep: '{sep}' must be a single character")
    return {"delimiter": sep, "quotechar": options.get("quotechar", '"'),
            "escapechar": options.get("escapechar"), "doublequote": options.get("doublequote", True),
            "skipinitialspace": options.get("skipinitialspace", False)}


def _check_options(options: dict, where: str) -> None:
    for key in options:
        if key in LINE_OPTIONS:
            raise MappingError(f"{where}.options.{key}: not supported for csv sources (ingestion checks "
                               f"every line against the header; remove it)")
