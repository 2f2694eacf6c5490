#!/usr/bin/env python3
"""Check Parquet registers against the simulator's ground truth, with pyarrow.

    registers_check.py parquet REGISTERS TRUTH KEY_FILE CONNECTION [PUPIL_REGISTER DISAGREEMENTS]
    REGISTERS_CHECK_DATABASE_URL=... registers_check.py postgres SCHEMA TRUTH KEY_FILE CONNECTION [PUPIL_REGISTER DISAGREEMENTS]

Reads the weekly and yearly registers under REGISTERS with pyarrow (not
with skolflode's code), or the register tables of SCHEMA with SQL (psql),
and the truth CSVs under TRUTH (rows are compared as multisets: a row
written twice is a difference), pseudonymises the
truth's civic numbers by the contract (HMAC-SHA256 of the 12-digit number
with the key, else of "<connection>:<person id>"), sums the truth's weeks
into school years by the yearly register's rule, and compares row for row.
With a pupil register (and the simulator's list of what it broke in it),
also checks the yearly integration: annotations, coverage, lines reported.
Of Parquet files it also checks what the contract promises: Hive-style partitions,
the columns, zstd compression and column statistics. Exits 1 on any
difference.
"""
import collections
import csv
import datetime
import hashlib
import hmac
import os
import pathlib
import subprocess
import sys
import urllib.parse

import pyarrow.parquet as pq

TS_COLUMNS = ["school_unit_code", "teacher_key", "student_key", "activity_id", "group_id",
              "subject_code", "lessons", "minutes", "is_grader", "source"]
ATT_COLUMNS = ["school_unit_code", "student_key", "subject_code", "lessons", "minutes_scheduled",
               "minutes_present", "minutes_valid_absence", "minutes_invalid_absence",
               "lessons_unreported", "source"]
COLUMNS = {"teacher_student": TS_COLUMNS, "attendance": ATT_COLUMNS}
COUNTS = {"teacher_student": {"lessons", "minutes"},
          "attendance": {"lessons", "minutes_scheduled", "minutes_present", "minutes_valid_absence",
                         "minutes_invalid_absence", "lessons_unreported"}}
YEARLY_EXTRA = ["first_week", "last_week", "weeks"]
REGISTER_COLUMNS = ["register_school_unit_code", "register_grade"]


def luhn_ok(digits):
    total = 0
    for i, d in enumerate(digits[2:]):
        v = d * 2 if i % 2 == 0 else d
        total += v // 10 + v % 10
    return total % 10 == 0


def pseudonym(key, connection, civic, person_id):
    digits = [int(c) for c in civic if c.isdigit()]
    if len(digits) == 12 and luhn_ok(digits):
        text = "".join(str(d) for d in digits)
    else:
        text = f"{connection}:{person_id}"
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def value(column, text):
    if column in COUNTS["teacher_student"] | COUNTS["attendance"]:
        return int(text)
    if column == "is_grader":
        return text == "true"
    return text


def truth_weeks(truth, key, connection):
    weeks = {}
    for week_dir in sorted((truth / "weekly").glob("week=*")):
        week = week_dir.name.removeprefix("week=")
        tables = {}
        with open(week_dir / "teacher_student.csv", newline="") as f:
            rows = collections.Counter()
            for r in csv.DictReader(f):
                rows.update([(r["school_unit_code"],
                          pseudonym(key, connection, r["teacher_civic"], r["teacher_id"]),
                          pseudonym(key, connection, r["student_civic"], r["student_id"]),
                          r["activity_id"], r["group_id"], r["subject_code"],
                          int(r["lessons"]), int(r["minutes"]), r["is_grader"] == "true",
                          r["source"])])
            tables["teacher_student"] = rows
        with open(week_dir / "attendance.csv", newline="") as f:
            rows = collections.Counter()
            for r in csv.DictReader(f):
                rows.update([(r["school_unit_code"],
                          pseudonym(key, connection, r["student_civic"], r["student_id"]),
                          r["subject_code"], int(r["lessons"]), int(r["minutes_scheduled"]),
                          int(r["minutes_present"]), int(r["minutes_valid_absence"]),
                          int(r["minutes_invalid_absence"]), int(r["lessons_unreported"]),
                          r["source"])])
            tables["attendance"] = rows
        if any(tables.values()):
            weeks[week] = tables
    return weeks


def school_year(week):
    year, number = week.split("-W")
    thursday = datetime.date.fromisocalendar(int(year), int(number), 4)
    start = thursday.year if thursday.month >= 7 else thursday.year - 1
    return f"{start}-{(start + 1) % 100:02d}"


def yearly(weeks, table):
    columns = COLUMNS[table]
    counted = [i for i, c in enumerate(columns) if c in COUNTS[table]]
    grouped = [i for i, c in enumerate(columns) if c not in COUNTS[table]]
    totals = {}
    for week in sorted(weeks):
        year = school_year(week)
        for row in weeks[week][table].elements():
            k = (year, tuple(row[i] for i in grouped))
            t = totals.get(k)
            if t is None:
                totals[k] = [[row[i] for i in counted], week, week, 1]
            else:
                t[0] = [a + row[i] for a, i in zip(t[0], counted)]
                if t[2] != week:
                    t[2] = week
                    t[3] += 1
    out = collections.defaultdict(collections.Counter)
    for (year, key), (sums, first, last, n) in totals.items():
        key, sums = list(key), list(sums)
        row = [key.pop(0) if i in grouped else sums.pop(0) for i in range(len(columns))]
        out[year][tuple(row) + (first, last, n)] += 1
    return out


def read_rows(path, period_column, columns, problems, trailing=()):
    """The rows of `columns`; the file must have exactly the period column,
    `columns` and `trailing`."""
    pf = pq.ParquetFile(path)
    names = pf.schema_arrow.names
    if names != [period_column] + columns + list(trailing):
        problems.append(f"{path}: columns {names}")
        return collections.Counter()
    for g in range(pf.metadata.num_row_groups):
        for c in range(pf.metadata.num_columns):
            chunk = pf.metadata.row_group(g).column(c)
            if chunk.compression != "ZSTD":
                problems.append(f"{path}: column {c} compressed {chunk.compression}")
            if chunk.statistics is None or not chunk.statistics.has_min_max:
                problems.append(f"{path}: column {c} has no statistics")
    table = pf.read()
    data = table.to_pydict()
    partition = path.parent.name.split("=", 1)[1]
    if any(v != partition for v in data[period_column]):
        problems.append(f"{path}: {period_column} differs from its partition {partition}")
    return collections.Counter(zip(*(data[c] for c in columns)))


def parquet_source(registers, problems):
    """{(register, table): {period: rows}} read from the Parquet files."""
    out = collections.defaultdict(dict)
    for register, period_column, extra, trailing in (("weekly", "week", [], []),
                                                     ("yearly", "school_year", YEARLY_EXTRA, REGISTER_COLUMNS)):
        for part in sorted((registers / register).glob(f"{period_column}=*")):
            period = part.name.split("=", 1)[1]
            for table, columns in COLUMNS.items():
                path = part / f"{table}.parquet"
                if path.exists():
                    out[(register, table)][period] = read_rows(path, period_column, columns + extra, problems, trailing)
    return out


def psql_environment(url):
    """libpq's variables for a postgres:// URL, so that the password is in
    no command line."""
    u = urllib.parse.urlsplit(url)
    env = dict(os.environ)
    for name, value in (("PGHOST", u.hostname), ("PGPORT", u.port), ("PGUSER", u.username),
                        ("PGPASSWORD", u.password), ("PGDATABASE", u.path.lstrip("/"))):
        if value:
            env[name] = urllib.parse.unquote(str(value))
    return env


def postgres_source(url, schema):
    """The same, read from PostgreSQL with SQL (psql's CSV output)."""
    env = psql_environment(url)
    out = collections.defaultdict(dict)
    for register, period_column, extra in (("weekly", "week", []), ("yearly", "school_year", YEARLY_EXTRA)):
        for table, columns in COLUMNS.items():
            names = [period_column] + columns + extra
            query = f"COPY (SELECT {', '.join(names)} FROM {schema}.{register}_{table}) TO STDOUT WITH CSV"
            done = subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", query],
                                  capture_output=True, text=True, env=env)
            if done.returncode != 0:
                sys.exit(f"psql failed on {schema}.{register}_{table}: {done.stderr.strip()}")
            text = done.stdout
            for record in csv.reader(text.splitlines()):
                row = []
                for name, cell in zip(names[1:], record[1:]):
                    if name in COUNTS[table] or name == "weeks":
                        row.append(int(cell))
                    elif name == "is_grader":
                        row.append(cell == "t")
                    else:
                        row.append(cell)
                out[(register, table)].setdefault(record[0], collections.Counter())[tuple(row)] += 1
    return out


def luhn_valid(text):
    digits = [int(c) for c in text if c.isdigit()]
    if len(text) != 12 or len(digits) != 12:
        return False
    month, day = digits[4] * 10 + digits[5], digits[6] * 10 + digits[7]
    if day > 60:
        day -= 60
    return 1 <= month <= 12 and 1 <= day <= 31 and luhn_ok(digits)


INT_COLUMNS = {"line", "register_pupils", "pipeline_pupils", "in_both", "only_in_register",
               "only_in_pipeline", "registered_elsewhere"}


def parquet_year(registers):
    """The school year of the Parquet registers and a reader of its tables
    (`coverage`, `register_findings`, `teacher_student`, `attendance`) as
    {column: [values]}."""
    year_dir = next(iter(sorted((registers / "yearly").glob("school_year=*"))), None)
    if year_dir is None:
        return None, None
    return year_dir.name.split("=", 1)[1], lambda name: pq.read_table(year_dir / f"{name}.parquet").to_pydict()


def postgres_year(url, schema):
    """The same, read from PostgreSQL with SQL."""
    env = psql_environment(url)

    def query(sql):
        done = subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c",
                               f"COPY ({sql}) TO STDOUT WITH CSV HEADER"],
                              capture_output=True, text=True, env=env)
        if done.returncode != 0:
            sys.exit(f"psql failed: {done.stderr.strip()}")
        return list(csv.DictReader(done.stdout.splitlines()))

    years = query(f"SELECT school_year FROM {schema}.yearly_teacher_student "
                  f"UNION SELECT school_year FROM {schema}.yearly_attendance ORDER BY 1")
    if not years:
        return None, None
    year = years[0]["school_year"]

    def read(name):
        table = name if name in ("coverage", "register_findings") else f"yearly_{name}"
        rows = query(f"SELECT * FROM {schema}.{table} WHERE school_year = '{year}'")
        columns = collections.defaultdict(list)
        for row in rows:
            for column, cell in row.items():
                columns[column].append(int(cell) if column in INT_COLUMNS else cell)
        return columns

    return year, read


def check_register(year, read, weeks, register_file, disagreements_file, key, problems):
    """The yearly integration with the pupil register, computed from the
    register's CSV and the truth alone: the annotations, the coverage table
    and the lines reported."""
    if year is None:
        problems.append("no yearly partition to integrate the register into")
        return
    pipeline = collections.defaultdict(set)
    for week, tables in weeks.items():
        if school_year(week) != year:
            continue
        for row in tables["teacher_student"]:
            pipeline[row[0]].add(row[2])
        for row in tables["attendance"]:
            pipeline[row[0]].add(row[1])
    registered, bad = {}, set()
    lines = pathlib.Path(register_file).read_text().splitlines()
    for number, line in enumerate(lines[1:], start=2):
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != 4 or not luhn_valid(fields[0]) or fields[1] not in pipeline:
            bad.add(number)
            continue
        k = hmac.new(key, fields[0].encode(), hashlib.sha256).hexdigest()
        if k in registered:
            bad.add(number)
            continue
        registered[k] = (fields[1], fields[3])
    injected = set()
    with open(disagreements_file, newline="") as f:
        for r in csv.DictReader(f):
            if r["kind"] in ("malformed_line", "invalid_civic_number", "unknown_school_unit"):
                injected.add(int(r["line"]))
    if not injected <= bad:
        problems.append(f"register lines the simulator broke but the check accepts: {sorted(injected - bad)[:5]}")
    findings = read("register_findings")
    if sorted(findings["line"]) != sorted(bad):
        problems.append(f"register findings: lines {sorted(set(findings['line']) ^ bad)[:5]} differ")
    anywhere = set().union(*pipeline.values()) if pipeline else set()
    by_unit = collections.defaultdict(set)
    for k, (unit, _) in registered.items():
        by_unit[unit].add(k)
    want = {}
    for unit in set(pipeline) | set(by_unit):
        here, listed = pipeline.get(unit, set()), by_unit.get(unit, set())
        want[unit] = (len(listed), len(here), len(here & listed), len(listed - anywhere),
                      len([k for k in here if k not in registered]),
                      len([k for k in here if k in registered and registered[k][0] != unit]))
    table = read("coverage")
    got = {u: tuple(table[c][i] for c in ("register_pupils", "pipeline_pupils", "in_both", "only_in_register",
                                          "only_in_pipeline", "registered_elsewhere"))
           for i, u in enumerate(table["school_unit_code"])}
    if got != want:
        differing = sorted(u for u in set(got) | set(want) if got.get(u) != want.get(u))
        problems.append(f"coverage differs for units {differing[:5]}")
    for table_name, columns in COLUMNS.items():
        data = read(table_name)
        if not data.get("student_key"):
            problems.append(f"{table_name}: no yearly rows to check the annotations of")
            continue
        for i, student in enumerate(data["student_key"]):
            unit, grade = registered.get(student, ("", ""))
            if (data["register_school_unit_code"][i], data["register_grade"][i]) != (unit, grade):
                problems.append(f"{table_name}: a row's register annotation differs")
                break
    print(f"register: {len(registered)} pupils matched by the contract, {len(bad)} lines reported, "
          f"{len(want)} units in the coverage table")


def main():
    kind = sys.argv[1]
    problems = []
    if kind == "parquet":
        registers, truth, key_file, connection = sys.argv[2:6]
        got = parquet_source(pathlib.Path(registers), problems)
    elif kind == "postgres":
        schema, truth, key_file, connection = sys.argv[2:6]
        got = postgres_source(os.environ["REGISTERS_CHECK_DATABASE_URL"], schema)
    else:
        sys.exit(f"unknown source {kind}: parquet or postgres")
    truth = pathlib.Path(truth)
    key = pathlib.Path(key_file).read_text().strip().encode()
    weeks = truth_weeks(truth, key, connection)
    compared = collections.Counter()
    for table in COLUMNS:
        want = {week: tables[table] for week, tables in weeks.items()}
        have = got.get(("weekly", table), {})
        for week in sorted(set(want) | set(have)):
            w, h = want.get(week, collections.Counter()), have.get(week, collections.Counter())
            compared[f"weekly {table} rows"] += w.total()
            if w != h:
                problems.append(f"{week} {table}: {(w - h).total()} missing, {(h - w).total()} not in the truth")
        want = yearly(weeks, table)
        have = got.get(("yearly", table), {})
        for year in sorted(set(want) | set(have)):
            w, h = want.get(year, collections.Counter()), have.get(year, collections.Counter())
            compared[f"yearly {table} rows"] += w.total()
            if w != h:
                problems.append(f"{year} {table}: {(w - h).total()} missing, {(h - w).total()} not in the truth")
    if len(sys.argv) > 7:
        if kind == "parquet":
            year, read = parquet_year(pathlib.Path(registers))
        else:
            year, read = postgres_year(os.environ["REGISTERS_CHECK_DATABASE_URL"], schema)
        check_register(year, read, weeks, sys.argv[6], sys.argv[7], key, problems)
    print(f"weeks in the truth: {len(weeks)}; " + ", ".join(f"{k}: {v}" for k, v in sorted(compared.items())))
    for p in problems[:20]:
        print("problem:", p)
    if problems or not weeks:
        print("DISAGREE")
        sys.exit(1)
    print("AGREE")


if __name__ == "__main__":
    main()
