"""The DuckDB catalog (``OUT/catalog.duckdb``): tables, the ``frames`` view, named queries.

One process writes the catalog (the build's driver); readers open it read-only. A source is
committed together with the shard holding its frames, in one transaction, so a build stopped at
any point leaves a catalog that names only complete sources and complete shards.

A build writes a *working copy* on local disk (:meth:`Catalog.for_build`) and publishes it to
``OUT/catalog.duckdb`` atomically (:meth:`Catalog.publish`: a renamed local file, or one
object-store upload) after commits and at the end, so readers (`portrait query`, `report`)
never wait for the build's lock and see a consistent snapshot, and OUT may be an object store.
Shard markers are settled only once a published catalog names their shards: a build killed
before a publish leaves the shards of its last commits pending, and the next cleanup removes
them. Builds of one local OUT never overlap (a lock file, ``OUT/.build.lock``); on object stores
nothing enforces that: run one build per OUT at a time.

A remote catalog (``s3://.../catalog.duckdb``) is read from a local copy; its ``frames`` view
reads the shards from the object store through an fsspec filesystem registered with DuckDB.

Opening the catalog costs the same however many shards there are: nothing under
``OUT/shards`` is listed or opened until a query reads ``frames`` (or the shard paths are
asked for). Then ``frames`` is defined from what the catalog records: every committed shard
except those `portrait verify` recorded as bad, and except those whose footer, read here
anyway, differs from the one the build wrote (manifests/shards.py) or is missing: those are
left out and named in one warning line together with the sources whose frames they held (the
next build redoes them; ``portrait verify OUT --repair`` un-commits them at once).
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path

import duckdb
import pyarrow as pa

from . import schemas
from .errors import PortraitError
from .shards import ShardInfo, check_shards, settle
from .storage import Location, StorageUnavailable, duckdb_filesystem, resolve

CATALOG_FILE = "catalog.duckdb"
log = logging.getLogger(__name__)
# Whether a query may read `frames` (then, and only then, the shards are checked and the view
# made). A word match, not a parse: DuckDB's parser cannot take `$name` parameters, and a false
# match (a string literal 'frames') only costs the check.
_HEALTH_COLUMNS = "path, rows, bytes, footer_sha256, problem"  # what checking a shard needs
_READS_FRAMES = re.compile(r"\bframes\b", re.IGNORECASE)
_LISTED = 5  # names shown in one warning line before "and N more"


class CatalogError(PortraitError):
    """A catalog that cannot be opened or queried as asked (printed as one line)."""


class StorageError(CatalogError):
    """Writing the catalog or a shard failed (a full disk, an I/O error): printed as one line."""


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:_LISTED])
    return shown + (f" and {len(names) - _LISTED} more" if len(names) > _LISTED else "")


def named_query_names() -> list[str]:
    folder = resources.files("manifests") / "sql"
    return sorted(p.name[:-4] for p in folder.iterdir() if p.name.endswith(".sql"))


def named_query_sql(name: str) -> str:
    path = resources.files("manifests") / "sql" / f"{name}.sql"
    if not path.is_file():
        raise CatalogError(f"no named query {name!r} (known: {', '.join(named_query_names())})")
    return path.read_text()


def catalog_location(where: str | Path | Location) -> Location:
    """OUT from ``OUT`` or ``OUT/catalog.duckdb`` (a path or a URI)."""
    if isinstance(where, Location):
        return where
    text = os.fspath(where).rstrip("/")
    if text.endswith(".duckdb"):
        text = text.rsplit("/", 1)[0] if "/" in text else "."
    return resolve(text)


class Catalog:
    def __init__(self, out_dir: str | Path | Location, read_only: bool = False, working_copy: bool = False):
        """Open OUT's catalog. Locally it is opened in place (``working_copy``: a copy is worked
        on and published); a remote one is always read from, or worked on in, a local copy."""
        try:
            self.out = catalog_location(out_dir)
        except StorageUnavailable as e:
            raise CatalogError(str(e)) from None
        self.out_dir = self.out.local_path.resolve() if self.out.is_local else self.out.uri
        self.published = self.out.url(CATALOG_FILE)
        self.read_only = read_only
        self.working_copy = working_copy or not self.out.is_local
        self._tmp: str | None = None
        self._lock = None
        self._unsettled: list[str] = []  # shards committed here, not yet in a published catalog
        try:
            exists = self.out.is_file(CATALOG_FILE)
        except OSError as e:
            raise CatalogError(f"cannot reach {self.published}: {_first_line(e)}") from None
        if read_only and not exists:
            raise CatalogError(f"no catalog at {self.published}")
        if not read_only:
            self.out.makedirs()
            self._take_lock()
        if self.working_copy:
            self._tmp = tempfile.mkdtemp(prefix="portrait-catalog-")
            self.path = Path(self._tmp) / CATALOG_FILE
            if exists:
                try:
                    self.out.download(CATALOG_FILE, self.path)
                except OSError as e:
                    self._cleanup()
                    raise CatalogError(f"cannot read {self.published}: {_first_line(e)}") from None
        else:
            self.path = self.out.local_path.resolve() / CATALOG_FILE
        try:
            self.con = duckdb.connect(str(self.path), read_only=read_only)
        except duckdb.Error as e:
            self._cleanup()
            raise CatalogError(f"cannot open catalog {self.published}: {str(e).splitlines()[0]}") from None
        self.unavailable: dict[str, str] = {}  # shard path -> what is wrong (left out of `frames`)
        self._frames_ready = False  # `frames` made in this session over the checked shards
        try:
            self._prepare(read_only)
        except BaseException:
            self.close()
            raise

    def _prepare(self, read_only: bool) -> None:
        if not self.out.is_local:
            self.con.register_filesystem(duckdb_filesystem(self.out))
        # Footers read when `frames` is bound are reused when it is scanned (a third faster on
        # a count over 10,000 shards).
        self.con.execute("SET parquet_metadata_cache = true")
        self._check_version()
        if not read_only:
            try:
                self._ensure_tables()
            except duckdb.Error as e:
                raise StorageError(f"cannot write the catalog {self.published}: {_first_line(e)}") from None

    @classmethod
    def for_build(cls, out_dir: str | Path | Location) -> Catalog:
        return cls(out_dir, working_copy=True)

    def _take_lock(self) -> None:
        """One writer per local OUT (the working copy no longer holds DuckDB's file lock there)."""
        if not self.out.is_local:
            return
        import fcntl

        self._lock = open(self.out.path(".build.lock"), "a+")  # noqa: SIM115 - held until close()
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock.close()
            self._lock = None
            raise CatalogError(f"another build (or `verify --repair`) is writing {self.out.uri}: "
                               "wait for it to finish") from None

    @classmethod
    def open_file(cls, catalog_path: str | Path, read_only: bool = True) -> Catalog:
        return cls(catalog_path, read_only=read_only)

    def _cleanup(self) -> None:
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def close(self) -> None:
        try:
            self.con.close()
        finally:
            self._cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def publish(self, final: bool = False) -> None:
        """Copy the working catalog to OUT atomically; then the shards it names are settled.
        ``final``: also refresh the stored ``frames`` view (binding it reads every shard footer,
        so intermediate snapshots keep the previous one: `portrait query` builds its own)."""
        if not self.working_copy:
            for shard_id in self._unsettled:
                settle(self.out, shard_id)
            self._unsettled = []
            return
        if final:
            self._store_frames_view()
        self.checkpoint()
        try:
            self.out.upload(self.path, CATALOG_FILE)
        except OSError as e:
            raise StorageError(f"cannot publish the catalog to {self.published}: "
                               f"{getattr(e, 'strerror', None) or _first_line(e)}") from None
        for shard_id in self._unsettled:
            settle(self.out, shard_id)
        self._unsettled = []

    # -- schema ---------------------------------------------------------------------------
    def _check_version(self) -> None:
        """A catalog written by another schema version is refused with one clear line."""
        has_meta = self.con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'meta'").fetchall()[0][0]
        if not has_meta:
            return
        row = next(iter(self.con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchall()), None)
        if row and int(row[0]) != schemas.SCHEMA_VERSION:
            raise CatalogError(f"{self.path} has schema version {row[0]}, this program uses "
                               f"{schemas.SCHEMA_VERSION}: build into a new output folder")

    def _ensure_tables(self) -> None:
        existing = {r[0] for r in self.con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        for name, schema in {**schemas.TABLES, "_frames_empty": schemas.FRAMES}.items():
            if name not in existing:
                self.con.register("_empty", schema.empty_table())
                self.con.execute(f"CREATE TABLE {name} AS SELECT * FROM _empty")
                self.con.unregister("_empty")
            else:
                self._add_new_columns(name, schema)
        self.con.execute("CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
        self.con.execute(
            "INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", [str(schemas.SCHEMA_VERSION)]
        )

    def _add_new_columns(self, table: str, schema: pa.Schema) -> None:
        """Columns added to a table within this schema version (see the changelog in
        manifests/schemas.py): added to an older catalog, null for its existing rows."""
        have = {r[0] for r in self.con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = ?", [table]).fetchall()}
        for f in schema:
            if f.name not in have:
                typ = self.con.from_arrow(pa.schema([f]).empty_table()).types[0]
                self.con.execute(f'ALTER TABLE {table} ADD COLUMN "{f.name}" {typ}')

    def shards(self, columns: str = "*") -> list[dict]:
        """Every committed shard row (path, rows, bytes, sha256, source_ids, ...)."""
        if not self._has_table("shards"):
            return []
        if columns != "*":  # a catalog older than a column has none of it (null)
            have = {r[0] for r in self.con.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'shards'").fetchall()}
            columns = ", ".join(c if c in have else f"NULL AS {c}" for c in (c.strip() for c in columns.split(",")))
        return self._rows(f"SELECT {columns} FROM shards ORDER BY path")

    def _rows(self, sql: str, params: list | None = None) -> list[dict]:
        # execute(), not sql(): it finishes whatever an earlier execute() left unfetched.
        try:
            cur = self.con.execute(sql, params or [])
            names = [d[0] for d in cur.description]
            return [dict(zip(names, r)) for r in cur.fetchall()]
        except duckdb.Error as e:
            raise CatalogError(_first_line(e)) from None

    def shard_paths(self) -> list[str]:
        """The committed shards that ``frames`` reads: those present and whose footer matches
        (see ``unavailable`` for the others)."""
        self.prepare_frames()
        return [r["path"] for r in self.shards("path") if r["path"] not in self.unavailable]

    def prepare_frames(self) -> None:
        """Make ``frames`` over the committed shards that are sound, once per session (a query
        that reads ``frames`` calls it; nothing else opens a shard).

        Health comes from the records (``shards.problem``, written by `portrait verify`) and
        from each footer, which reading the shards needs anyway: one read of the file's end,
        hashed and compared with the footer the build wrote, so a shard that is missing,
        truncated or has a flipped byte in its footer is left out (one warning line), never
        read with wrong row counts. A read-only open makes a temporary view of the paths where
        OUT is now, so a moved or re-mounted output folder still reads; the stored view
        (`duckdb OUT/catalog.duckdb`) is written by the build (:meth:`publish`)."""
        if self._frames_ready:
            return
        self.unavailable = {}
        rows = self.shards(_HEALTH_COLUMNS)
        recorded = {r["path"]: f"`portrait verify` found: {r['problem']}" for r in rows if r.get("problem")}
        try:
            found = check_shards(self.out, [r for r in rows if r["path"] not in recorded], upto="footer")
        except OSError as e:
            raise CatalogError(f"cannot read the shards of {self.out.uri}: {_first_line(e)}") from None
        self.unavailable = {**recorded, **found}
        try:
            self._create_frames_view([r["path"] for r in rows if r["path"] not in self.unavailable],
                                     temporary=self.read_only)
        except duckdb.Error as e:
            raise CatalogError(f"cannot read the shards of {self.out.uri}: {_first_line(e)}") from None
        self._frames_ready = True
        if self.unavailable:  # once per session: every command that reads frames says it
            log.warning(self.unavailable_message())

    def _store_frames_view(self) -> None:
        """The stored ``frames`` (absolute paths or URIs, for plain `duckdb OUT/catalog.duckdb`):
        the shards the catalog records as sound. Binding it reads their footers, so a build
        does it once, at its end; if a shard went missing meanwhile, it is checked first."""
        paths = [r["path"] for r in self.shards(_HEALTH_COLUMNS) if not r.get("problem")]
        try:
            self._create_frames_view(paths, temporary=False)
        except duckdb.Error:
            self._frames_ready = False
            self.prepare_frames()
            self._create_frames_view(self.shard_paths(), temporary=False)

    def _create_frames_view(self, rel_paths: list[str], temporary: bool) -> None:
        paths = [self.out.url(p) for p in rel_paths]
        if paths:
            listing = ", ".join("'" + p.replace("'", "''") + "'" for p in paths)
            body = f"SELECT * FROM read_parquet([{listing}], union_by_name = true)"
        else:
            body = "SELECT * FROM _frames_empty"
        kind = "TEMP VIEW" if temporary else "VIEW"
        self.con.execute(f"CREATE OR REPLACE {kind} frames AS {body}").fetchall()  # finished, for con.sql()

    def sources_of_shards(self, paths: list[str]) -> list[dict]:
        """source_id and rel_path of the sources whose frames the given shards hold."""
        if not paths:
            return []
        return self._rows(
            "SELECT DISTINCT s.source_id, s.rel_path FROM shards sh, unnest(sh.source_ids) AS u(source_id) "
            "JOIN sources s USING (source_id) WHERE list_contains(?, sh.path) ORDER BY s.rel_path",
            [paths])

    def unavailable_message(self) -> str:
        paths = sorted(self.unavailable)
        sources = [r["rel_path"] for r in self.sources_of_shards(paths)]
        shards = _listing([f"{p} ({self.unavailable[p]})" for p in paths])
        return (f"{len(paths)} shard file(s) missing or unreadable, left out of `frames`: {shards}; "
                f"frames of {len(sources)} source(s) affected: {_listing(sources) or '-'}; "
                f"the next build over {self.out.uri} redoes them (`portrait verify --repair` un-commits them now)")

    def _has_table(self, name: str) -> bool:
        return bool(self.con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [name]).fetchall()[0][0])

    # -- writes ---------------------------------------------------------------------------
    def insert(self, table: str, data: pa.Table) -> None:
        if data.num_rows == 0:
            return
        self.con.register("_incoming", data)
        cols = ", ".join(f'"{c}"' for c in data.column_names)
        self.con.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM _incoming")
        self.con.unregister("_incoming")

    def commit_sources(
        self,
        sources: pa.Table,
        clips: pa.Table,
        errors: pa.Table,
        shards: Iterable[ShardInfo] = (),
        run_id: str = "",
        replace: Iterable[str] | None = None,
    ) -> None:
        """Record finished sources (and the shards holding their frames) atomically; then the
        shards are no longer pending (their markers go, at once, or for a working copy once it
        is published). A failed write raises StorageError and leaves the catalog as it was: the
        shard files stay pending, for the next cleanup. ``replace``: the sources that may have
        earlier rows (None: any of them); the others are inserted without a search."""
        shards = list(shards)
        # The build hashed each shard while writing it: that is its first verification.
        now = datetime.now(timezone.utc)
        shard_rows = [dict(s.__dict__, source_ids=list(s.source_ids), run_id=run_id, verified_at=now) for s in shards]
        try:
            self.con.execute("BEGIN TRANSACTION")
            try:
                ids = sources.column("source_id").to_pylist() if replace is None else list(replace)
                if ids:
                    # A re-run of a source replaces its earlier rows (idempotent commits).
                    self.con.execute("DELETE FROM clips WHERE list_contains(?, source_id)", [ids])
                    self.con.execute("DELETE FROM errors WHERE list_contains(?, source_id)", [ids])
                    self.con.execute("DELETE FROM sources WHERE list_contains(?, source_id)", [ids])
                self.insert("sources", sources)
                self.insert("clips", clips)
                self.insert("errors", errors)
                self.insert("shards", schemas.table_from_rows(shard_rows, schemas.SHARDS))
                self.con.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
        except duckdb.Error as e:
            raise StorageError(f"cannot write the catalog {self.published}: {_first_line(e)}") from None
        self._unsettled.extend(s.shard_id for s in shards)
        self._frames_ready = self._frames_ready and not shard_rows  # new shards: `frames` is made again
        if not self.working_copy:
            self.publish()

    def _rollback(self) -> None:
        try:
            self.con.execute("ROLLBACK")
        except duckdb.Error:
            pass  # the failed statement may have ended the transaction already

    def uncommit(self, source_ids: list[str], shard_paths: list[str]) -> None:
        """Forget sources and shards, so that the next build redoes those sources."""
        try:
            self.con.execute("BEGIN TRANSACTION")
            for table in ("clips", "errors", "sources"):
                self.con.execute(f"DELETE FROM {table} WHERE list_contains(?, source_id)", [source_ids])
            self.con.execute("DELETE FROM shards WHERE list_contains(?, path)", [shard_paths])
            self.con.execute("COMMIT")
        except duckdb.Error as e:
            self._rollback()
            raise StorageError(f"cannot write the catalog {self.published}: {_first_line(e)}") from None
        self._frames_ready = False

    def record_checks(self, ok: list[str], bad: dict[str, str]) -> None:
        """Record what a full check (`portrait verify`) found: the shards in ``ok`` matched
        their sha256 now (``verified_at``); those in ``bad`` get their ``problem`` (left out of
        ``frames`` from then on, and redone by the next build)."""
        try:
            self.con.execute("BEGIN TRANSACTION")
            if ok:
                self.con.execute("UPDATE shards SET verified_at = now(), problem = NULL WHERE list_contains(?, path)",
                                 [ok])
            for path, problem in bad.items():
                self.con.execute("UPDATE shards SET problem = ? WHERE path = ?", [problem, path])
            self.con.execute("COMMIT")
        except duckdb.Error as e:
            self._rollback()
            raise StorageError(f"cannot write the catalog {self.published}: {_first_line(e)}") from None
        self._frames_ready = False

    def mark_dead_runs(self) -> int:
        """Runs still `running` when a build starts died (builds of one OUT never overlap:
        the build lock): they become `interrupted`. Returns how many."""
        n = self.con.execute("SELECT count(*) FROM runs WHERE status = 'running'").fetchall()[0][0]
        if n:
            self.con.execute("UPDATE runs SET status = 'interrupted' WHERE status = 'running'")
        return n

    def checkpoint(self) -> None:
        """Write everything to the database file now, so a failure shows here, not silently
        at close."""
        try:
            self.con.execute("CHECKPOINT")
        except duckdb.Error as e:
            raise StorageError(f"cannot write the catalog {self.published}: {_first_line(e)}") from None

    def record_errors(self, errors: pa.Table) -> None:
        self.insert("errors", errors)

    def start_run(self, row: Mapping) -> None:
        self.insert("runs", schemas.table_from_rows([dict(row)], schemas.RUNS))

    def update_run(self, run_id: str, **fields) -> None:
        sets = ", ".join(f"{k} = ?" for k in fields)
        self.con.execute(f"UPDATE runs SET {sets} WHERE run_id = ?", [*fields.values(), run_id])

    # -- reads ----------------------------------------------------------------------------
    def done_source_ids(self, retry_errors: bool = False) -> set[str]:
        """Sources a build skips: all committed ones except errored ones that are retried,
        those lost to the infrastructure (errors.kind = 'infra') and, with ``retry_errors``,
        every errored one."""
        return {r[0] for r in self.con.execute(
            "SELECT source_id FROM sources WHERE NOT (status = 'error' AND "
            "(? OR source_id IN (SELECT source_id FROM errors WHERE kind = 'infra')))",
            [retry_errors]).fetchall()}

    def lost_source_ids(self) -> set[str]:
        """Sources whose worker was lost (errors.kind = 'infra'): a build gives each a unit of its own."""
        return {r[0] for r in self.con.execute(
            "SELECT DISTINCT source_id FROM errors WHERE kind = 'infra' AND source_id IS NOT NULL").fetchall()}

    def latest_run(self) -> dict | None:
        rows = self.query("SELECT * FROM runs ORDER BY started_at DESC LIMIT 1").to_pylist()
        return rows[0] if rows else None

    def latest_thresholds(self) -> dict[str, float]:
        run = self.latest_run()
        if not run or not run.get("config_json"):
            return {}
        return {k: float(v) for k, v in json.loads(run["config_json"]).get("thresholds", {}).items()}

    def query(self, sql: str, params: Mapping | list | None = None) -> pa.Table:
        if _READS_FRAMES.search(sql):
            self.prepare_frames()
        try:
            return self.con.sql(sql, params=params or None).to_arrow_table()
        except duckdb.Error as e:
            raise CatalogError(str(e).splitlines()[0]) from None

    def named(self, name: str, params: Mapping[str, float] | None = None) -> pa.Table:
        """Run a named query; ``$name`` parameters default to the latest build's thresholds."""
        return self.query(*self.named_sql(name, params))

    def named_sql(self, name: str, params: Mapping[str, float] | None = None) -> tuple[str, dict | None]:
        """A named query's SQL and its parameters (the latest build's thresholds, overridden)."""
        sql = named_query_sql(name)
        wanted = _parameters_in(sql)
        values = {**self.latest_thresholds(), **(params or {})}
        missing = sorted(wanted - set(values))
        if missing:
            raise CatalogError(f"named query {name!r} needs parameters: {', '.join(missing)}")
        return sql, ({k: values[k] for k in wanted} if wanted else None)

    def head(self, sql: str, params: Mapping | list | None = None, limit: int = 50) -> tuple[pa.Table, bool]:
        """The first ``limit`` rows of a query, and whether it has more, without making the
        whole result: DuckDB computes a sorted query's columns for the rows shown only
        (`rethreshold` over 10M clips: hundredths of a second, where the whole result, or even
        its count, takes seconds)."""
        if _READS_FRAMES.search(sql):
            self.prepare_frames()
        try:
            rows = self.con.sql(sql, params=params or None).limit(limit + 1).to_arrow_table()
        except duckdb.Error as e:
            raise CatalogError(str(e).splitlines()[0]) from None
        return rows.slice(0, limit), rows.num_rows > limit


def _parameters_in(sql: str) -> set[str]:
    body = "\n".join(line.split("--", 1)[0] for line in sql.splitlines())
    return set(re.findall(r"\$([A-Za-z_][A-Za-z0-9_]*)", body))


__all__ = ["CATALOG_FILE", "Catalog", "CatalogError", "StorageError", "named_query_names", "named_query_sql"]
