"""A CSV reader that never merges rows: each physical line is one row (unless the source
declares `multiline_values: true`), and a line whose quoting or field count is wrong is
rejected with its line number instead of swallowing the lines after it or shifting values
into another row's columns.

Fields per line are counted over the file's bytes at once: separators, minus those inside
quotes (the quote parity, reset at the end of a line that leaves a quote open). Lines whose
quoting is unusual (a quote inside an unquoted field), or that hold a stray CR or the escape
character, are parsed one by one with the `csv` module in strict mode. The good lines then
go to pandas' C parser, restricted to the wanted columns. A reject carries the line number,
the reason and the field counts, never the line's text (it may hold declared PII).
"""
from __future__ import annotations

import codecs
import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.errors import MappingError

# options that change which lines are rows: the line checks below could not follow them
LINE_OPTIONS = ("header", "names", "skiprows", "skipfooter", "nrows", "comment", "lineterminator",
                "engine", "on_bad_lines", "index_col", "usecols", "dtype", "chunksize", "iterator")
MALFORMED_ROW = "malformed_row"  # the reject reason of a line whose quoting or field count is wrong


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
    if not first:
        raise MappingError(f"{where}: the file is empty (no header line)")
    return _header_of(first.rstrip("\r\n"), _dialect(options), where)


def read_csv_rows(path: Path, columns: list[str], options: dict, where: str,
                  multiline_values: bool = False) -> CsvRows:
    """The wanted columns of every well-formed row, as text (empty cells missing)."""
    _check_options(options, where)
    dialect = _dialect(options)
    raw = path.read_bytes()
    text = _decoded(raw, options, path, where)
    if multiline_values:
        return _records(text.split("\n"), columns, dialect, options, where)
    data = (raw if _encoding(options) == "utf-8-sig" else text.encode("utf-8")).removeprefix(codecs.BOM_UTF8)
    del text
    buf = np.frombuffer(data, dtype=np.uint8)
    starts, ends = _line_bounds(buf)
    filled = np.flatnonzero(ends > starts)
    if not len(filled):
        raise MappingError(f"{where}: the file is empty (no header line)")
    header = _header_of(data[starts[filled[0]]:ends[filled[0]]].decode("utf-8"), dialect, where)
    fields, open_quote = _field_counts(data, buf, starts, ends, dialect)
    body = filled[1:]
    fields, open_quote = fields[body], open_quote[body]
    bad = open_quote | (fields != len(header))
    line_no = body + 1  # 1-based physical line numbers
    rejects = pd.DataFrame({"row": line_no[bad] - 2, "reason": MALFORMED_ROW,
                            "detail": _details(line_no[bad], fields[bad], open_quote[bad], len(header))})
    source = io.BytesIO(raw)  # nothing to leave out: pandas reads the bytes as they are
    if bad.any():  # the header and the good lines only, so no bad line can disturb the parser
        source = io.BytesIO(_without_lines(data, starts, body[bad]))
        options = {k: v for k, v in options.items() if k != "encoding"}
    frame = _pandas_read(source, columns, options, where)
    if len(frame) != int((~bad).sum()):
        raise MappingError(f"{where}: {len(frame):,} rows read where the line checks found "
                           f"{int((~bad).sum()):,}: the file has line breaks the checks cannot follow")
    frame.index = pd.Index(line_no[~bad] - 2, dtype="int64")
    return CsvRows(frame=frame, rejects=rejects)


def _line_bounds(buf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start of each physical line, and its end without the line break (LF or CR LF)."""
    breaks = np.flatnonzero(buf == 10)
    starts = np.concatenate([[0], breaks + 1]).astype("int64")
    ends = np.concatenate([breaks, [len(buf)]]).astype("int64")
    if len(buf):
        ends -= (ends > starts) & (buf[np.maximum(ends - 1, 0)] == 13)
    return starts, ends


def _without_lines(data: bytes, starts: np.ndarray, dropped: np.ndarray) -> bytes:
    """The bytes with the given lines (and their line breaks) cut out."""
    nexts = np.append(starts, len(data))[dropped + 1]
    begin = np.concatenate([[0], nexts])
    end = np.concatenate([starts[dropped], [len(data)]])
    return b"".join(data[a:b] for a, b in zip(begin, end))


def _field_counts(data: bytes, buf: np.ndarray, starts: np.ndarray, ends: np.ndarray, dialect: dict
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Fields per line, and whether a line leaves a quote open. Separators outside quotes are
    counted with the quote parity of the whole buffer (vectorised); lines whose quoting is
    not the usual shape (fields unquoted or wholly quoted), or that hold a stray CR or the
    escape character, are parsed one by one with `csv` in strict mode."""
    sep, quote = dialect["delimiter"], dialect["quotechar"]
    n = len(starts)
    if not (sep.isascii() and quote.isascii()):
        return _parsed_one_by_one(data, starts, ends, np.arange(n), dialect, np.zeros(n, "int64"),
                                  np.zeros(n, bool))
    lines = pa.LargeStringArray.from_buffers(n, pa.py_buffer(np.append(starts, len(data)).astype("int64")),
                                             pa.py_buffer(data))  # each line with its line break
    seps = np.flatnonzero(buf == ord(sep))
    fields = np.searchsorted(seps, ends) - np.searchsorted(seps, starts) + 1
    quotes = np.flatnonzero(buf == ord(quote))
    per_line = np.searchsorted(quotes, ends) - np.searchsorted(quotes, starts)
    quoted, open_quote = per_line > 0, (per_line % 2 == 1)
    if len(quotes):  # separators inside quotes do not count
        toggles = buf == ord(quote)
        toggles[ends[open_quote & (ends < len(buf))]] = True  # an open quote ends with its line
        inside = seps[np.bitwise_xor.accumulate(toggles.view(np.uint8))[seps] == 1]
        fields -= np.bincount(np.searchsorted(starts, inside, side="right") - 1, minlength=n)
    special = quoted & ~_usual_quoting(lines, dialect) if quoted.any() else quoted
    special |= _stray_carriage_returns(lines, starts, ends, data)
    if dialect["escapechar"]:
        special |= _holding(lines, dialect["escapechar"], data)
    return _parsed_one_by_one(data, starts, ends, np.flatnonzero(special), dialect, fields, open_quote)


def _stray_carriage_returns(lines: pa.Array, starts: np.ndarray, ends: np.ndarray, data: bytes) -> np.ndarray:
    """Lines holding a CR that is not their line break (pandas would end the row there)."""
    holding = _holding(lines, "\r", data)
    if not holding.any():
        return holding
    crlf = (np.append(starts[1:], len(data)) - ends) == 2
    return pc.count_substring(lines, "\r").to_numpy(zero_copy_only=False) > crlf


def _holding(lines: pa.Array, text: str, data: bytes) -> np.ndarray:
    """Lines that hold `text` (a quick no for the whole file first)."""
    if text.encode() not in data:
        return np.zeros(len(lines), dtype=bool)
    return pc.match_substring(lines, text).to_numpy(zero_copy_only=False)


def _usual_quoting(lines: pa.Array, dialect: dict) -> np.ndarray:
    """Lines whose every field is unquoted or wholly quoted (doubled quotes inside)."""
    if not dialect["doublequote"] or dialect["skipinitialspace"]:
        return np.zeros(len(lines), dtype=bool)
    sep, quote = re.escape(dialect["delimiter"]), re.escape(dialect["quotechar"])
    field = f"(?:{quote}(?:[^{quote}]|{quote}{quote})*{quote}|[^{quote}{sep}\\r\\n]*)"
    return pc.match_substring_regex(lines, f"^{field}(?:{sep}{field})*\\r?\\n?$").to_numpy(zero_copy_only=False)


def _parsed_one_by_one(data: bytes, starts: np.ndarray, ends: np.ndarray, which: np.ndarray, dialect: dict,
                       fields: np.ndarray, open_quote: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    parsed = [_split_line(data[starts[i]:ends[i]].decode("utf-8"), dialect) for i in which]
    fields[which] = [-1 if p is None else len(p) for p in parsed]
    open_quote[which] = [p is None for p in parsed]
    return fields, open_quote


def _details(line_no: np.ndarray, fields: np.ndarray, open_quote: np.ndarray, expected: int) -> pd.Series:
    why = np.where(open_quote, "a quote is left open or misplaced",
                   fields.astype(str).astype(object) + f" fields, the header has {expected}")
    return ("line " + pd.Series(line_no.astype(str), dtype=object) + ": " + pd.Series(why, dtype=object))


def _split_line(line: str, dialect: dict) -> list[str] | None:
    try:
        return next(csv.reader((line,), strict=True, **dialect))
    except (csv.Error, StopIteration):
        return None


def _records(lines: list[str], columns: list[str], dialect: dict, options: dict, where: str) -> CsvRows:
    """Quoted values may span lines: rows are csv records, numbered by their first line;
    a record whose field count differs from the header's is rejected."""
    reader = csv.reader((line + "\n" for line in lines), strict=True, **dialect)
    rows, starts, bad = [], [], []
    header: list[str] | None = None
    while True:
        start = reader.line_num + 1
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:  # the reader goes on with the next line
            bad.append((start - 2, MALFORMED_ROW, f"line {start}: {str(exc).splitlines()[0]}"))
            continue
        if not record or record == [""]:
            continue
        if header is None:
            header = record
        elif len(record) == len(header):
            rows.append(record)
            starts.append(start)
        else:
            bad.append((start - 2, MALFORMED_ROW, f"line {start}: {len(record)} fields, the header has {len(header)}"))
    if header is None:
        raise MappingError(f"{where}: the file is empty (no header line)")
    buffer = io.StringIO()
    csv.writer(buffer, **dialect).writerows([header, *rows])
    rest = {k: v for k, v in options.items() if k != "encoding"}
    frame = _pandas_read(io.StringIO(buffer.getvalue()), columns, rest, where)
    frame.index = pd.Index(np.asarray(starts, dtype="int64") - 2, dtype="int64")
    return CsvRows(frame=frame, rejects=pd.DataFrame(bad, columns=["row", "reason", "detail"]))


def _pandas_read(source: io.IOBase, columns: list[str], options: dict, where: str) -> pd.DataFrame:
    # strings throughout, so ids keep leading zeros and bad cells reach the rejects as written;
    # only empty cells are missing ("NA" may be a region, "None" a real value)
    try:
        return pd.read_csv(source, usecols=columns, dtype=str, keep_default_na=False,
                           na_values=[""], **options)
    except (ValueError, pd.errors.ParserError) as exc:
        raise MappingError(f"{where}: cannot read: {str(exc).splitlines()[0]}") from None


def _decoded(raw: bytes, options: dict, path: Path, where: str) -> str:
    encoding = _encoding(options)
    try:
        return raw.decode(encoding)
    except (UnicodeDecodeError, LookupError) as exc:
        raise _decode_error(where, path, encoding, exc) from None


def _encoding(options: dict) -> str:
    encoding = options.get("encoding") or "utf-8"
    # a byte-order mark is not part of the first column's name
    return "utf-8-sig" if encoding.replace("-", "").lower() == "utf8" else encoding


def _decode_error(where: str, path: Path, encoding: str, exc: Exception) -> MappingError:
    return MappingError(f"{where}: cannot read {path} as {encoding}: {str(exc).splitlines()[0]} "
                        f"(set sources.<name>.options.encoding)")


def _header_of(line: str, dialect: dict, where: str) -> list[str]:
    header = _split_line(line, dialect)
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
