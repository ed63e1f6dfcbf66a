"""The benchmark harness: mbp against the baselines, each command a whole process.

Cases of one group run alternately (round-robin, the order rotating every round) several
times in one go, so the machine's noise falls on all of them alike; a group's first round
is a warm-up that is checked for correct output and not timed. For every case it prints
the median wall time and the median peak RSS (the child's own rusage from os.wait4), and
ratios against the baseline measured in the same group. Commands are started by a lean
launcher (_spawn.py) so that no child's peak RSS includes the harness's own memory.

    .venv/bin/python benchmarks/run.py --scale quick       # make bench
    .venv/bin/python benchmarks/run.py --scale full        # BENCH_SCALE=full make bench
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parent))
import generate  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PY = sys.executable
MBP = str(Path(sys.executable).parent / "mbp")
BASE = HERE / "baselines"
BUDGET_S = 300.0  # one five-minute batch
HEADROOM = 10


@dataclass
class Case:
    """One command to time; `output` is emptied before every run."""

    name: str
    argv: list[str]
    output: Path | None = None
    walls: list[float] = field(default_factory=list)
    rss_kib: list[int] = field(default_factory=list)

    @property
    def wall(self) -> float:
        return statistics.median(self.walls)

    @property
    def rss_mb(self) -> float:
        return statistics.median(self.rss_kib) / 1024


class Launcher:
    """The lean child process (_spawn.py) that forks and times every command."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [PY, "-I", "-S", str(HERE / "_spawn.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def run(self, case: Case, env: dict[str, str], cwd: Path) -> tuple[float, int]:
        """Run the case's command to the end; return (wall seconds, peak RSS KiB) of that child."""
        if case.output is not None:
            shutil.rmtree(case.output, ignore_errors=True)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        with tempfile.NamedTemporaryFile(suffix=".stderr") as err:
            request = {"argv": case.argv, "env": env, "cwd": str(cwd), "stderr": err.name}
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
            answer = json.loads(self.proc.stdout.readline())
            if answer["exit"] != 0:
                message = Path(err.name).read_text(errors="replace").strip()[-2000:]
                raise SystemExit(f"{case.name} failed with exit {answer['exit']}: {message}")
        return answer["wall"], answer["maxrss_kib"]

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait()


LAUNCHER: Launcher | None = None


def run_once(case: Case, env: dict[str, str], cwd: Path) -> tuple[float, int]:
    global LAUNCHER
    LAUNCHER = LAUNCHER or Launcher()
    return LAUNCHER.run(case, env, cwd)


def run_group(
    title: str,
    cases: list[Case],
    repeats: int,
    env: dict[str, str],
    cwd: Path,
    check: Callable[[], None] | None = None,
    warmup: bool = True,
) -> None:
    """Round-robin over the cases; round 0 is an untimed warm-up when `warmup`."""
    rounds = repeats + (1 if warmup else 0)
    started = time.perf_counter()
    for r in range(rounds):
        shift = r % len(cases)
        for case in cases[shift:] + cases[:shift]:
            wall, rss = run_once(case, env, cwd)
            if warmup and r == 0:
                continue
            case.walls.append(wall)
            case.rss_kib.append(rss)
        if r == 0 and check is not None:
            check()
    print(f"  {title}: {rounds} rounds in {time.perf_counter() - started:.0f} s", file=sys.stderr)


# --- output checks: every case must have done the same work ------------------------------


def _scores(folder: Path) -> dict[str, float]:
    rows = duckdb.execute(
        "SELECT userid, score FROM read_parquet($g)", {"g": f"{folder}/**/*.parquet"}
    ).fetchall()
    return dict(rows)


def same_scores(reference: Case, others: list[Case]) -> Callable[[], None]:
    """A check that every case wrote the rows and scores the reference wrote."""

    def check() -> None:
        assert reference.output is not None
        want = _scores(reference.output)
        for case in others:
            assert case.output is not None
            got = _scores(case.output)
            if set(got) != set(want):
                raise SystemExit(
                    f"{case.name} wrote {len(got)} rows, {reference.name} {len(want)}: "
                    "the cases do not do the same work"
                )
            worst = max((abs(got[k] - v) for k, v in want.items()), default=0.0)
            if worst > 1e-6:
                raise SystemExit(f"{case.name}: scores differ from {reference.name} by {worst}")

    return check


def same_stdout(a: Case, b: Case, env: dict[str, str], cwd: Path) -> Callable[[], None]:
    """A check that two commands print the same first column (the ranked ids)."""

    def first_column(case: Case) -> list[str]:
        out = subprocess.run(case.argv, capture_output=True, text=True, env=env, cwd=cwd)
        if out.returncode != 0:
            raise SystemExit(f"{case.name} failed: {out.stderr.strip()}")
        return [r[0] for r in list(csv.reader(io.StringIO(out.stdout)))[1:]]

    def check() -> None:
        left, right = first_column(a), first_column(b)
        if left != right or not left:
            raise SystemExit(
                f"{a.name} and {b.name} rank different users ({len(left)} vs {len(right)})"
            )

    return check


# --- the measurements ---------------------------------------------------------------------


def mbp_has(command: str, env: dict[str, str]) -> bool:
    out = subprocess.run([MBP, command, "--help"], capture_output=True, env=env)
    return out.returncode == 0


def epoch(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp())


def predict_cases(
    p: generate.Paths,
    tag: str,
    features: str,
    ids: str | None,
    out: Path,
    t: int,
    with_mbp: bool,
    baselines: tuple[str, ...],
) -> dict[str, Case]:
    """The predict commands for one input and id list, keyed by tool."""
    cases: dict[str, Case] = {}
    common = ["--model", p.model, "--input", features, "--scheduled-time", str(t)]
    idarg = ["--ids", ids] if ids else []
    scripts = {
        "floor": "predict_floor.py",
        "duckdb-in": "predict_duckdb_in.py",
        "pandas": "predict_pandas.py",
    }
    for tool in baselines:
        folder = out / f"{tool}-{tag}"
        cases[tool] = Case(
            f"{tool} {tag}",
            [PY, str(BASE / scripts[tool]), *common, *idarg, "--output", str(folder)],
            folder,
        )
    if with_mbp:
        folder = out / f"mbp-{tag}"
        argv = [
            MBP,
            "predict",
            "--model",
            p.model,
            "--input",
            features,
            "--output",
            str(folder),
            "--rowid-column",
            "userid",
            "--scheduled-time",
            str(t),
            "--timezone",
            "UTC",
            "-q",
        ]
        if ids:
            argv += ["--rowid-filter", f"@{ids}"]
        cases["mbp"] = Case(f"mbp {tag}", argv, folder)
    return cases


@dataclass
class Row:
    case: Case
    baseline: Case | None = None
    note: str = ""


@dataclass
class Target:
    what: str
    measured: str
    goal: str
    ok: bool | None  # None: not judged at this scale / not measurable


def nightly_rounds(repeats: int) -> int:
    # The no-filter group scores every row of N and 5N: minutes per round.
    return max(2, min(repeats - 2, 3))


def fmt_ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scale", choices=sorted(generate.SCALES), default=os.environ.get("BENCH_SCALE") or "quick"
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--dir", type=Path, default=generate.default_dir())
    parser.add_argument(
        "--repeats", type=int, help="timed rounds per group (default: 3 quick, 5 full)"
    )
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated groups: filter,growth,nofilter,listusers,rank,startup (default: all)",
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 5 if args.scale == "full" else 3
    bench_dir = args.dir.resolve()
    if bench_dir == REPO or REPO in bench_dir.parents:
        raise SystemExit(f"--dir {bench_dir} is inside the repository; benchmark data stays out")
    only = {g.strip() for g in args.only.split(",") if g.strip()}

    def want(group: str) -> bool:
        return not only or group in only

    n = generate.SCALES[args.scale]
    print(f"mbp benchmarks, {args.scale} scale: N = {n:,}, data in {bench_dir}", file=sys.stderr)
    p = generate.ensure(bench_dir, n, args.seed, log=lambda m: print(f"  {m}", file=sys.stderr))
    out = bench_dir / "out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    cwd = bench_dir / "cwd"  # no mbp.toml here, so only the flags count
    cwd.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MBP_")}
    t = epoch(p.scheduled_time)
    has_predict = mbp_has("predict", env)
    has_rank = mbp_has("rank", env)
    load_before = os.getloadavg()
    rows: list[Row] = []
    targets: list[Target] = []
    judged = args.scale == "full"
    facts: dict[str, float] = {}

    def section(title: str) -> None:
        rows.append(Row(Case(f"**{title}**", []), note="section"))

    # predict with a filter, K ids out of N rows; at K = 10,000 also over 5N rows
    filt: dict[int, dict[str, Case]] = {}
    for k in generate.K_VALUES:
        if not (want("filter") or (k == 10_000 and want("growth"))):
            continue
        cases = predict_cases(
            p,
            f"K={k:,} N={n:,}",
            p.features,
            p.ids[k],
            out,
            t,
            has_predict,
            ("floor", "duckdb-in", "pandas"),
        )
        group = list(cases.values())
        if k == 10_000 and want("growth"):
            big = predict_cases(
                p, f"K={k:,} 5N={5 * n:,}", p.features_5n, p.ids_5n, out, t, has_predict, ("floor",)
            )
            cases |= {f"{tool}@5N": c for tool, c in big.items()}
            group += list(big.values())
            checks = [
                same_scores(
                    cases["floor"],
                    [c for key, c in cases.items() if "@5N" not in key and key != "floor"],
                ),
                same_scores(
                    cases["floor@5N"],
                    [c for key, c in cases.items() if "@5N" in key and key != "floor@5N"],
                ),
            ]
        else:
            checks = [
                same_scores(cases["floor"], [c for key, c in cases.items() if key != "floor"])
            ]
        run_group(
            f"predict K={k:,}",
            group,
            args.repeats,
            env,
            cwd,
            check=lambda checks=checks: [c() for c in checks],
        )
        filt[k] = cases
        section(f"predict with a filter: K = {k:,} ids of N = {n:,} rows")
        for tool in ("floor", "duckdb-in", "pandas", "mbp"):
            if tool in cases:
                rows.append(Row(cases[tool], None if tool == "floor" else cases["floor"]))
        if "floor@5N" in cases:
            section(f"growth: K = {k:,} over 5N = {5 * n:,} rows (ratio: 5N vs N)")
            for tool in ("floor", "mbp"):
                if f"{tool}@5N" in cases:
                    rows.append(Row(cases[f"{tool}@5N"], cases[tool]))

    if 10_000 in filt and "mbp" in filt[10_000]:
        c = filt[10_000]
        mbp, floor, pandas = c["mbp"], c["floor"], c["pandas"]
        targets += [
            Target(
                f"predict K=10,000, N={n:,}: time vs floor",
                fmt_ratio(mbp.wall, floor.wall),
                "<= 1.25x",
                mbp.wall <= 1.25 * floor.wall,
            ),
            Target(
                f"predict K=10,000, N={n:,}: speed-up over pandas",
                fmt_ratio(pandas.wall, mbp.wall),
                ">= 1.5x",
                pandas.wall >= 1.5 * mbp.wall,
            ),
            Target(
                f"predict K=10,000, N={n:,}: peak RSS vs pandas",
                fmt_ratio(mbp.rss_mb, pandas.rss_mb),
                "<= 0.3x",
                mbp.rss_mb <= 0.3 * pandas.rss_mb,
            ),
        ]
        if "mbp@5N" in c:
            targets.append(
                Target(
                    f"growth K=10,000: mbp time 5N vs N (floor: "
                    f"{fmt_ratio(c['floor@5N'].wall, floor.wall)})",
                    fmt_ratio(c["mbp@5N"].wall, mbp.wall),
                    "report",
                    None,
                )
            )
    if 100_000 in filt and "mbp" in filt[100_000]:
        c = filt[100_000]
        targets.append(
            Target(
                f"predict K=100,000, N={n:,}: time vs duckdb-in (b)",
                fmt_ratio(c["mbp"].wall, c["duckdb-in"].wall),
                "< 1x (faster)",
                c["mbp"].wall < c["duckdb-in"].wall,
            )
        )

    # predict without a filter: the nightly pattern over N and 5N rows
    if want("nofilter") and has_predict:
        cases = predict_cases(p, f"all N={n:,}", p.features, None, out, t, True, ("floor",))
        big = predict_cases(p, f"all 5N={5 * n:,}", p.features_5n, None, out, t, True, ())
        # The heaviest group: fewer rounds, and no warm-up (the files are cached by now);
        # the check runs after the first timed round instead.
        run_group(
            "predict without a filter",
            [cases["mbp"], big["mbp"], cases["floor"]],
            nightly_rounds(args.repeats),
            env,
            cwd,
            check=same_scores(cases["floor"], [cases["mbp"]]),
            warmup=False,
        )
        section("predict without a filter (nightly): rows/s in the note; ratio: 5N vs N")
        small_mbp, big_mbp = cases["mbp"], big["mbp"]
        rows.append(Row(cases["floor"], note=f"{n / cases['floor'].wall:,.0f} rows/s"))
        rows.append(Row(small_mbp, cases["floor"], note=f"{n / small_mbp.wall:,.0f} rows/s"))
        rows.append(Row(big_mbp, small_mbp, note=f"{5 * n / big_mbp.wall:,.0f} rows/s"))
        rate_small, rate_big = n / small_mbp.wall, 5 * n / big_mbp.wall
        facts["nightly_rows_per_s"] = rate_small
        targets += [
            Target(
                "predict without a filter: peak RSS 5N vs N",
                fmt_ratio(big_mbp.rss_mb, small_mbp.rss_mb),
                "<= 1.2x",
                big_mbp.rss_mb <= 1.2 * small_mbp.rss_mb,
            ),
            Target(
                "predict without a filter: rows/s at N vs 5N",
                fmt_ratio(rate_small, rate_big),
                "<= 1.2x",
                rate_small <= 1.2 * rate_big,
            ),
        ]

    # list-users: one window over a short and a 10x longer history
    if want("listusers"):

        def lu(path: str, label: str) -> Case:
            return Case(
                f"list-users {label}",
                [
                    MBP,
                    "list-users",
                    "--sessions",
                    path,
                    "--window",
                    "5m",
                    "--scheduled-time",
                    p.scheduled_time,
                    "--timezone",
                    "UTC",
                ],
            )

        short = lu(p.sessions_short, f"1 day ({n:,} events)")
        long = lu(p.sessions_long, f"10 days ({10 * n:,} events)")
        run_group("list-users", [short, long], args.repeats, env, cwd)
        section("list-users: one 5-minute window (ratio: 10x history vs 1x)")
        rows += [Row(short), Row(long, short)]
        facts["list_users_s"] = long.wall
        targets.append(
            Target(
                "list-users: 10x history vs 1x",
                fmt_ratio(long.wall, short.wall),
                "<= 1.3x",
                long.wall <= 1.3 * short.wall,
            )
        )

    # rank over a month of five-minute batches
    if want("rank") and has_rank:
        files = f"{generate.BATCHES:,} files x {p.predictions_users} users"
        hand = Case(
            f"hand-written DuckDB query ({files})",
            [PY, str(BASE / "rank_duckdb.py"), "--predictions", p.predictions],
        )
        mine = Case(
            f"mbp rank ({files})",
            [
                MBP,
                "rank",
                "--predictions",
                p.predictions,
                "--format",
                "csv",
                "--limit",
                "100",
                "--threshold",
                "0.7",
            ],
        )
        run_group(
            "rank", [hand, mine], args.repeats, env, cwd, check=same_stdout(hand, mine, env, cwd)
        )
        section("rank: latest score per user over a month of batches")
        rows += [Row(hand), Row(mine, hand)]
        facts["rank_s"] = mine.wall
        targets.append(
            Target(
                f"rank over {generate.BATCHES:,} files: time vs hand query ({mine.wall:.2f} s)",
                fmt_ratio(mine.wall, hand.wall),
                "<= 1.2x",
                mine.wall <= 1.2 * hand.wall,
            )
        )

    # start-up: what cron pays every run
    if want("startup"):
        bare = Case("python -c pass (interpreter alone)", [PY, "-c", "pass"])
        version = Case("mbp --version", [MBP, "--version"])
        tiny = Case(
            "mbp list-users, 100-row file",
            [
                MBP,
                "list-users",
                "--sessions",
                p.tiny_sessions,
                "--window",
                "5m",
                "--scheduled-time",
                p.scheduled_time,
                "--timezone",
                "UTC",
            ],
        )
        run_group("start-up", [bare, version, tiny], max(args.repeats, 10), env, cwd)
        section("start-up")
        rows += [Row(bare), Row(version, bare), Row(tiny, bare)]
        targets.append(
            Target("mbp --version", f"{version.wall:.3f} s", "< 0.3 s", version.wall < 0.3)
        )

    load_after = os.getloadavg()
    report(
        args,
        n,
        p,
        rows,
        targets,
        judged,
        has_predict,
        has_rank,
        filt,
        facts,
        load_before,
        load_after,
    )
    return 0


def budget(filt: dict[int, dict[str, Case]], facts: dict[str, float], n: int) -> list[str]:
    """How many users one batch can score inside a tenth of the five-minute interval.

    Fixed cost: list-users plus predict with K = 1,000 ids. Cost per user: the nightly run's
    time per row (scan, model, write), because the model's time per row is what grows
    with K; the slope between K = 1,000 and 100,000 drowns in this machine's noise.
    """
    if 1_000 not in filt or "mbp" not in filt[1_000] or "nightly_rows_per_s" not in facts:
        return []
    fixed = filt[1_000]["mbp"].wall + facts.get("list_users_s", 0.0)
    rate = facts["nightly_rows_per_s"]
    allowed = BUDGET_S / HEADROOM
    fit = int((allowed - fixed) * rate)
    lines = [
        f"Budget: a five-minute batch with {HEADROOM}x headroom has {allowed:.0f} s. At "
        f"N = {n:,}, list-users + predict cost {fixed:.2f} s fixed (list-users and K = 1,000) "
        f"+ 1/{rate:,.0f} s per user (the nightly rows/s).",
    ]
    if 100_000 in filt and "mbp" in filt[100_000]:
        lines.append(f"Measured: K = 100,000 users in {filt[100_000]['mbp'].wall:.2f} s.")
    if fit >= n:
        lines.append(f"All N = {n:,} users fit in one batch (the estimate is {fit:,}).")
    else:
        lines.append(f"About {fit:,} users fit in one batch.")
    return lines


def report(
    args,
    n,
    p,
    rows,
    targets,
    judged,
    has_predict,
    has_rank,
    filt,
    facts,  # type: ignore[no-untyped-def]
    load_before,
    load_after,
) -> None:
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    mem = next(
        (
            line.split()[1]
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal:")
        ),
        "0",
    )
    versions = {}
    for mod in ("duckdb", "onnxruntime", "pyarrow", "pandas", "numpy"):
        try:
            versions[mod] = __import__(mod).__version__
        except ImportError:
            versions[mod] = "-"
    lines = [
        f"## Run of {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {args.scale} scale "
        f"(N = {n:,}), mbp at {commit or '?'}",
        "",
        f"Machine: {os.cpu_count()} CPUs ({len(os.sched_getaffinity(0))} usable), "
        f"{int(mem) / 1024 / 1024:.1f} GiB RAM, {platform.platform()}, Python "
        f"{platform.python_version()}; "
        + ", ".join(f"{k} {v}" for k, v in versions.items())
        + f". Load average before {load_before[0]:.2f}, after {load_after[0]:.2f}.",
        f"Each case: {args.repeats} timed rounds (no-filter group: {nightly_rounds(args.repeats)}, "
        f"start-up: {max(args.repeats, 10)}), run alternately; medians.",
        "",
        "| case | median s | min-max s | peak RSS MB | vs baseline (time) | note |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        c = row.case
        if row.note == "section":
            lines.append(f"| {c.name} | | | | | |")
            continue
        ratio = fmt_ratio(c.wall, row.baseline.wall) if row.baseline else "baseline"
        lines.append(
            f"| {c.name} | {c.wall:.3f} | {min(c.walls):.2f}-{max(c.walls):.2f} | "
            f"{c.rss_mb:,.0f} | {ratio} | {row.note} |"
        )
    if not has_predict:
        lines.append("| mbp predict | | | | | not measured: `mbp predict` is not there yet |")
    if not has_rank:
        lines.append("| mbp rank | | | | | not measured: `mbp rank` is not there yet |")
    lines += ["", "| target | measured | goal | result |", "|---|---:|---|---|"]
    for tg in targets:
        if tg.ok is None:
            verdict = "reported"
        elif tg.ok:
            verdict = "pass"
        else:
            verdict = "MISS"
        if not judged and tg.ok is not None:
            verdict += " (judged at full scale)"
        lines.append(f"| {tg.what} | {tg.measured} | {tg.goal} | {verdict} |")
    extra = budget(filt, facts, n)
    if extra:
        lines += [""] + extra
    text = "\n".join(lines)
    print(text)
    if args.json:
        data = {
            "scale": args.scale,
            "n": n,
            "commit": commit,
            "versions": versions,
            "cases": [
                {"case": r.case.name, "walls": r.case.walls, "rss_kib": r.case.rss_kib}
                for r in rows
                if r.note != "section"
            ],
            "targets": [tg.__dict__ for tg in targets],
        }
        args.json.write_text(json.dumps(data, indent=2))


if __name__ == "__main__":
    sys.exit(main())
