"""Registered models: resolving a name to a loaded encoder, and the registry's admin operations.

A registration is a function ``fastembed_ext."model:<name>"()`` returning the model's record
(why functions: see sql/api.sql, "the model registry"); the default model is the function
``fastembed_ext.default_model()``. A name is pinned to its bundle's content fingerprint: every
load checks it, and the registry refuses to re-point or remove a name (or change the default)
while stored vectors depend on it.
"""

from __future__ import annotations

import os

import fastembed_ext
from fastembed_ext._files import MANIFEST_FILE
from fastembed_ext._http import check_url

from .errors import fail, from_engine
from .remote import Remote, timeout_seconds

# (no typing, json, re or expressions at import time: see errors.py)
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .session import Backend

# A name is part of a function name ("model:" + name, at most 63 bytes) and is never a path.
_NAME_FIRST = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")
_NAME_REST = _NAME_FIRST | frozenset(".@+-")
_NAME_MAX_BYTES = 63 - len("model:")
ADMIN_ROLE = "fastembed_ext_admin"
# Serialises changes to the registry (the key is arbitrary but fixed).
_REGISTRY_LOCK = 0x66655F6D  # "fe_m"


def _valid_name(name: str) -> bool:
    return (name[:1] in _NAME_FIRST and all(c in _NAME_REST for c in name)
            and len(name.encode()) <= _NAME_MAX_BYTES)


class Model:
    """A model as a statement uses it: a registration, or a bundle an admin named by path."""

    __slots__ = ("name", "path", "fingerprint", "dim")

    def __init__(self, name: str, path: str, fingerprint: str | None, dim: int | None = None) -> None:
        self.name = name
        self.path = path
        self.fingerprint = fingerprint  # None: a path, loaded as it is
        self.dim = dim

    def __repr__(self) -> str:
        return f"Model({self.name!r}, {self.path!r}, {self.fingerprint!r}, {self.dim!r})"


def _cached_plan(backend: Backend, plpy, key: str, query: str, types: list[str]):
    plan = backend.plans.get(key)
    if plan is None:
        plan = backend.plans[key] = plpy.prepare(query, types)
    return plan


def registered_names(plpy) -> list[str]:
    return [r["name"] for r in plpy.execute("SELECT name FROM fastembed_ext.models ORDER BY 1")]


def lookup(backend: Backend, plpy, name: str | None) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """(the registration of ``name`` or of the default model, or None; the session's settings,
    with the database's or cluster's embedding server as "server" until `_server` has checked the
    session's value against it)."""
    plan = _cached_plan(
        backend,
        plpy,
        "lookup",
        """SELECT i OPERATOR(pg_catalog.->>) 'name' AS name, i OPERATOR(pg_catalog.->>) 'path' AS path,
                  i OPERATOR(pg_catalog.->>) 'fingerprint' AS fingerprint,
                  (i OPERATOR(pg_catalog.->>) 'dim')::pg_catalog.int4 AS dim,
                  i OPERATOR(pg_catalog.->>) 'similarity' AS similarity,
                  pg_catalog.current_setting('fastembed_ext.threads', true) AS threads,
                  pg_catalog.current_setting('fastembed_ext.default_model', true) AS session_default,
                  CASE WHEN $2 THEN fastembed_ext._server_setting() END AS server,
                  pg_catalog.current_setting('fastembed_ext.server', true) AS session_server,
                  pg_catalog.current_setting('fastembed_ext.server_timeout', true) AS server_timeout
           FROM fastembed_ext._model($1) AS i""",
        ["text", "boolean"],
    )
    read_server = backend.checked_server is None
    row = dict(plpy.execute(plan, [name, read_server])[0])
    if not read_server:
        del row["server"]
    # (fields, not the record as JSON: a new backend would import json only to read it; the
    # function in FROM runs once, where a subquery's column would be run for each field)
    info = None
    if row["name"] is not None:
        info = {key: row[key] for key in ("name", "path", "fingerprint", "dim", "similarity")}
    return info, row


def is_admin(plpy) -> bool:
    return bool(plpy.execute("SELECT fastembed_ext._is_admin() AS ok")[0]["ok"])


def check_bundle_path(path: str, *, name: str | None = None) -> None:
    """A model the server loads must be a bundle: anything else gets the command that makes one."""
    if not os.path.isabs(path):
        fail(f'model path "{path}" is not absolute', sqlstate="22023",
             detail="A relative path would depend on the server's working directory.",
             hint="Give the absolute path of a fastembed_ext bundle directory on the database server.")
    if os.path.isfile(os.path.join(path, MANIFEST_FILE)):
        return
    target = f"/path/to/bundles/{name}" if name else "/path/to/bundle"
    if os.path.isdir(path):
        fail(
            f'"{path}" is not a fastembed_ext bundle',
            sqlstate="22023",
            detail=f"It has no {MANIFEST_FILE}; the server loads only bundles, never exports a "
            "checkpoint itself (that would import transformers and write files inside a statement).",
            hint=f"Export it once: fastembed-ext export {path} {target}  (on a machine with "
            "fastembed_ext[export]), then use the bundle's path.",
        )
    fail(f'model path "{path}" does not exist or is not readable by the server', sqlstate="58P01",
         detail=f"Looked as the server's operating-system user ({_os_user()}).",
         hint="The path must be a fastembed_ext bundle directory that the database server's "
         "operating-system user can read.")


def _os_user() -> str:
    import pwd

    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"


def _server(backend: Backend, plpy, settings: dict[str, Any]) -> str | None:
    """The embedding server's URL, from the database's or the cluster's setting only. Those are
    read (from the catalogs and the configuration files: 0.2 ms of every embed()) until the
    session's value has been found equal to them, and again whenever the session's value changes.
    So a database setting changed while a session runs takes effect in new sessions, as
    PostgreSQL's own settings do; a reloaded configuration file changes the session's value too."""
    session = settings["session_server"] or None
    if backend.checked_server == (session,):
        return session
    if "server" in settings:  # `lookup` read it
        trusted = settings["server"] or None
    else:
        plan = _cached_plan(backend, plpy, "server", "SELECT fastembed_ext._server_setting() AS server", [])
        trusted = plpy.execute(plan)[0]["server"] or None
    if session != trusted:
        fail(
            "fastembed_ext.server is set in this session, but only a database or cluster setting is used",
            sqlstate="42501",
            detail=f'The session says "{session or ""}"; the database and cluster say "{trusted or ""}". '
            "The server's vectors are stored in everyone's tables, so a session cannot choose it.",
            hint="RESET fastembed_ext.server. The database's owner sets it with ALTER DATABASE ... SET "
            "fastembed_ext.server = 'unix:/path/to/server.sock'; a superuser in postgresql.conf.",
        )
    backend.checked_server = (session,)
    return trusted


def resolve(backend: Backend, plpy, model: str | None):
    """The model a statement asked for (None: the database's default) and what embeds with it:
    its encoder, loaded in this backend, or the machine's embedding server."""
    info, settings = lookup(backend, plpy, model)
    server = _server(backend, plpy, settings)
    if server is None:
        backend.apply_threads(settings["threads"])
    if model is None:
        session_default = settings["session_default"]
        if session_default and (info is None or session_default != info["name"]):
            fail(
                "fastembed_ext.default_model is set in this session, but embed(text) uses only "
                "the database's default model",
                sqlstate="22023",
                detail=f'The session says "{session_default}"; the database\'s default model is '
                + (f'"{info["name"]}".' if info else "not set."),
                hint="RESET fastembed_ext.default_model (and ALTER DATABASE ... RESET it), and pass "
                "the model: embed(text, 'name'). An admin sets the default with "
                "SELECT fastembed_ext.set_default_model('name').",
            )
        if info is None:
            fail(
                "no model given and the database has no default model",
                sqlstate="22023",
                detail="embed(text) and embed_batch(texts) use the database's default model.",
                hint="Pass a model, e.g. embed(text, 'minilm'), or ask an admin to set one: "
                "SELECT fastembed_ext.set_default_model('minilm').",
            )
    if info is not None:
        found = Model(info["name"], info["path"], info["fingerprint"], info.get("dim"))
    elif "/" in model:  # a path: registered names never contain '/'
        if not is_admin(plpy):
            fail(
                f'permission denied to load a model from the path "{model}"',
                sqlstate="42501",
                detail="Loading a model runs its code in the server, so only superusers and "
                f"members of {ADMIN_ROLE} name models by path.",
                hint="Use a registered model (SELECT name FROM fastembed_ext.models), or ask an "
                f"admin to register this bundle: SELECT fastembed_ext.register_model('name', '{model}').",
            )
        check_bundle_path(model)
        found = Model(model, model, None)
        if server is not None:  # the server knows bundles by content: fingerprint the path's
            from fastembed_ext import _native

            found = Model(model, model, _native.fingerprint(model))
    else:
        known = registered_names(plpy)
        fail(
            f'unknown model "{model}"',
            sqlstate="42704",
            detail="Registered models: " + (", ".join(known) if known else "none") + ".",
            hint=f"An admin registers a bundle with SELECT fastembed_ext.register_model('{model}', "
            "'/path/to/bundle'); see SELECT * FROM fastembed_ext.models.",
        )
    if server is not None:
        return found, remote(backend, server, settings["server_timeout"], found, info)
    return found, load(backend, found)


def remote(backend: Backend, server: str, timeout_setting: str | None, found: Model, info: dict[str, Any] | None) -> Remote:
    """The server's stand-in for `found`, the same object while nothing it depends on changes:
    embed() keeps its last answer per engine object (see Backend.last_embed). Its URL and timeout
    are checked when it is made."""
    key = (server, timeout_setting, found.name, found.path, found.fingerprint)
    cached = backend.remotes.get(key)
    if cached is None:
        try:
            check_url(server)
        except ValueError as exc:
            fail(f'invalid value for fastembed_ext.server: "{server}"', sqlstate="22023",
                 detail=f"It is the URL of a fastembed-ext serve process: {exc}.",
                 hint="Use unix:/path/to/server.sock or http://host:port.")
        dim, similarity = (info["dim"], info["similarity"]) if info else _manifest_shape(found.path)
        if len(backend.remotes) >= 64:  # bounded: a session may name many bundles by path
            backend.remotes.clear()
        cached = backend.remotes[key] = Remote(server, timeout_seconds(timeout_setting), found, dim, similarity)
    return cached


def _manifest_shape(path: str) -> tuple[int, str]:
    import json

    manifest = json.loads(open(os.path.join(path, MANIFEST_FILE), encoding="utf-8").read())
    return int(manifest["dim"]), str(manifest["similarity"])


def load(backend: Backend, model: Model) -> fastembed_ext.Encoder:
    key = model.name if model.fingerprint else "path:" + model.path
    cached = backend.encoders.get(key)
    if cached is not None and cached[0] == (model.path, model.fingerprint):
        return cached[1]
    try:
        encoder = fastembed_ext.Encoder(model.path, fingerprint=model.fingerprint)
    except fastembed_ext.BundleChangedError as exc:
        raise from_engine(
            exc,
            f'model "{model.name}" changed on disk since it was registered',
            hint="Put the registered files back, or check the new ones and register them under "
            f"another name (re-registering \"{model.name}\" is refused while stored vectors "
            f"depend on it: SELECT * FROM fastembed_ext.model_dependents('{model.name}')).",
        ) from None
    except (fastembed_ext.FastembedExtError, OSError, ValueError) as exc:
        where = model.path if model.name == model.path else f'{model.path} (model "{model.name}")'
        fail(
            f"cannot load model {where}",
            sqlstate="58030",
            detail=f"{type(exc).__name__}: {exc}",
            hint="The path must be a fastembed_ext bundle that the database server's "
            "operating-system user can read.",
        )
    backend.encoders[key] = ((model.path, model.fingerprint), encoder)
    return encoder


# --------------------------------------------------------------------------- dependents


class Stored:
    """Something that stores vectors: a generated column, column default, index or materialized
    view calling embed(), or an attached column, with the models its vectors come from."""

    __slots__ = ("kind", "object", "detail", "models")

    def __init__(self, kind: str, object: str, detail: str, models: frozenset[str]) -> None:  # noqa: A002
        self.kind, self.object, self.detail = kind, object, detail
        self.models = models  # names, expressions.DEFAULT (embed(text)) or expressions.ANY


def stored_vectors(plpy) -> list[Stored]:
    from . import expressions

    nsp = plpy.execute(
        "SELECT e.extnamespace FROM pg_catalog.pg_extension e WHERE e.extname = 'fastembed_ext'")[0]["extnamespace"]
    rows = plpy.execute(
        f"""WITH fns AS (
                SELECT p.oid FROM pg_catalog.pg_proc p
                WHERE p.pronamespace = {int(nsp)} AND p.proname IN ('embed', 'embed_batch'))
            SELECT CASE WHEN a.attgenerated <> '' THEN 'generated column' ELSE 'column default' END AS kind,
                   pg_catalog.format('%s.%I', c.oid::pg_catalog.regclass, a.attname) AS object,
                   pg_catalog.pg_get_expr(d.adbin, d.adrelid) AS expr
            FROM pg_catalog.pg_attrdef d
            JOIN pg_catalog.pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum
            JOIN pg_catalog.pg_class c ON c.oid = d.adrelid
            WHERE EXISTS (SELECT FROM pg_catalog.pg_depend dep
                          WHERE dep.classid = 'pg_catalog.pg_attrdef'::pg_catalog.regclass AND dep.objid = d.oid
                            AND dep.refclassid = 'pg_catalog.pg_proc'::pg_catalog.regclass
                            AND dep.refobjid IN (SELECT oid FROM fns))
            UNION ALL
            SELECT CASE c.relkind WHEN 'm' THEN 'materialized view' ELSE 'index' END,
                   c.oid::pg_catalog.regclass::text,
                   CASE c.relkind WHEN 'm' THEN pg_catalog.pg_get_viewdef(c.oid)
                        ELSE pg_catalog.pg_get_indexdef(c.oid) END
            FROM pg_catalog.pg_class c
            WHERE c.relkind IN ('i', 'I', 'm') AND EXISTS (
                SELECT FROM pg_catalog.pg_depend dep
                WHERE dep.refclassid = 'pg_catalog.pg_proc'::pg_catalog.regclass
                  AND dep.refobjid IN (SELECT oid FROM fns)
                  AND ((dep.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND dep.objid = c.oid)
                       OR (dep.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass AND dep.objid IN (
                           SELECT r.oid FROM pg_catalog.pg_rewrite r WHERE r.ev_class = c.oid))))
            ORDER BY 1, 2"""
    )
    found = [Stored(r["kind"], r["object"], r["expr"],
                    frozenset(call.model for call in expressions.embed_calls(r["expr"]))) for r in rows]
    for row in plpy.execute(
        "SELECT pg_catalog.format('%s.%I', a.tbl, a.vector_column) AS object, a.mode, a.source_column, a.model "
        "FROM fastembed_ext.attachments a ORDER BY 1"
    ):
        found.append(Stored("attached column", row["object"],
                            f"{row['mode']}: embeds column {row['source_column']}", frozenset([row["model"]])))
    return found


def dependents(plpy, name: str) -> list[tuple[str, str, str]]:
    """(kind, object, detail) of everything holding vectors that model ``name`` made (or may
    have made: an expression whose model is not a constant counts for every model)."""
    from . import expressions

    default = plpy.execute("SELECT fastembed_ext._model(NULL) ->> 'name' AS n")[0]["n"]
    out = []
    for s in stored_vectors(plpy):
        if name in s.models:
            detail = s.detail
        elif expressions.ANY in s.models:
            detail = "its model is not a constant, so it may hold vectors of any model"
        elif default == name and expressions.DEFAULT in s.models:
            detail = f"embeds with the database's default model ({name}): {s.detail}"
        else:
            continue
        out.append((s.kind, s.object, detail))
    return out


def _refuse_if_depended_on(plpy, name: str, action: str, hint: str) -> None:
    found = dependents(plpy, name)
    if not found:
        return
    shown = [f"{kind} {obj}" for kind, obj, _ in found[:10]]
    more = f" and {len(found) - 10} more" if len(found) > 10 else ""
    fail(
        f'cannot {action}: stored vectors depend on model "{name}"',
        sqlstate="55006",
        detail="Depending on it: " + "; ".join(shown) + more + ".",
        hint=hint + f" See SELECT * FROM fastembed_ext.model_dependents('{name}').",
    )


# --------------------------------------------------------------------------- registry changes


def _lock_registry(plpy) -> None:
    plpy.execute(f"SELECT pg_catalog.pg_advisory_xact_lock({_REGISTRY_LOCK})")


def _function(name: str) -> str:
    return "fastembed_ext." + _quote_ident("model:" + name)


def _quote_ident(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def check_name(name: str) -> None:
    if not _valid_name(name):
        fail(
            f'invalid model name "{name}"',
            sqlstate="22023",
            detail=f"A name is 1 to {_NAME_MAX_BYTES} characters: letters, digits and _ . @ + -, "
            "not starting with . @ + or -.",
            hint="Paths are given as the second argument: register_model('name', '/path/to/bundle').",
        )


def _write_registration(plpy, name: str, record: dict[str, Any]) -> None:
    import json

    fn = _function(name)
    plpy.execute(
        f"CREATE OR REPLACE FUNCTION {fn}() RETURNS jsonb LANGUAGE sql IMMUTABLE PARALLEL SAFE "
        f"RETURN {plpy.quote_literal(json.dumps(record, sort_keys=True))}::jsonb"
    )
    plpy.execute(f"SELECT fastembed_ext._disown({plpy.quote_literal(fn + '()')}::pg_catalog.regprocedure)")
    plpy.execute(
        f"COMMENT ON FUNCTION {fn}() IS "
        + plpy.quote_literal(f'fastembed_ext: the registration of model "{name}" (see fastembed_ext.models)')
    )


def register(backend: Backend, plpy, name: str, path: str, *, check_dependents: bool = True) -> dict[str, Any]:
    check_name(name)
    check_bundle_path(path, name=name)
    _lock_registry(plpy)
    from fastembed_ext import _native

    try:  # what is recorded (dim, similarity...) comes from the very bytes the fingerprint covers
        fingerprint = _native.fingerprint(path)
        encoder = fastembed_ext.Encoder(path, fingerprint=fingerprint)
    except fastembed_ext.FastembedExtError as exc:
        fail(f'cannot register model "{name}" from {path}', sqlstate="58030",
             detail=f"{type(exc).__name__}: {exc}",
             hint="The path must be a fastembed_ext bundle the server's operating-system user can read.")
    current, _ = lookup(backend, plpy, name)
    if check_dependents and current is not None and current["fingerprint"] != fingerprint:
        _refuse_if_depended_on(
            plpy, name, f'point "{name}" at other content',
            f'Register the new bundle under another name and move the columns to it, or drop or '
            f'detach what depends on "{name}" first.',
        )
    record = {
        "path": path,
        "fingerprint": fingerprint,
        "dim": encoder.dim,
        "similarity": encoder.similarity,
        "max_seq_length": encoder.max_seq_length,
        "normalize": encoder.normalize,
        "registered_at": _utc_now(),
    }
    _write_registration(plpy, name, record)
    backend.encoders.pop(name, None)
    row = plpy.execute(
        "SELECT * FROM fastembed_ext.models WHERE name = " + plpy.quote_literal(name)
    )[0]
    return dict(row)


def unregister(backend: Backend, plpy, name: str) -> bool:
    _lock_registry(plpy)
    current, _ = lookup(backend, plpy, name)
    if current is None:
        return False
    _refuse_if_depended_on(plpy, name, f'unregister model "{name}"',
                           "Drop or detach what depends on it first.")
    default, _ = lookup(backend, plpy, None)
    if default is not None and default["name"] == name:
        plpy.execute("DROP FUNCTION fastembed_ext.default_model()")
    plpy.execute(f"DROP FUNCTION {_function(name)}()")
    backend.encoders.pop(name, None)
    return True


def set_default(backend: Backend, plpy, name: str | None) -> str | None:
    from . import expressions

    _lock_registry(plpy)
    current, _ = lookup(backend, plpy, None)
    current_name = current["name"] if current else None
    if name is not None:
        check_name(name)
        if lookup(backend, plpy, name)[0] is None:
            known = registered_names(plpy)
            fail(f'unknown model "{name}"', sqlstate="42704",
                 detail="Registered models: " + (", ".join(known) if known else "none") + ".",
                 hint="Register it first: SELECT fastembed_ext.register_model(name, '/path/to/bundle').")
    if name == current_name:
        return name
    if current_name is not None:
        found = [(d.kind, d.object, d.detail) for d in stored_vectors(plpy)
                 if expressions.DEFAULT in d.models or expressions.ANY in d.models]
        if found:
            fail(
                "cannot change the default model: stored vectors were made with it by embed(text)",
                sqlstate="55006",
                detail="Depending on it: " + "; ".join(f"{k} {o}" for k, o, _ in found[:10]) + ".",
                hint=f"Name the model in those expressions (embed(text, '{current_name}')) or drop "
                "them first.",
            )
    if name is None:
        plpy.execute("DROP FUNCTION IF EXISTS fastembed_ext.default_model()")
        return None
    plpy.execute(
        "CREATE OR REPLACE FUNCTION fastembed_ext.default_model() RETURNS text LANGUAGE sql "
        f"IMMUTABLE PARALLEL SAFE RETURN {plpy.quote_literal(name)}"
    )
    plpy.execute("SELECT fastembed_ext._disown('fastembed_ext.default_model()'::pg_catalog.regprocedure)")
    plpy.execute("COMMENT ON FUNCTION fastembed_ext.default_model() IS "
                 "'fastembed_ext: the database''s default model, used by embed(text)'")
    return name


def migrate_from_0_1_0(backend: Backend, plpy) -> None:
    """0.1.0 kept models in a table and the default in ALTER DATABASE ... SET. Anything 0.2.0
    cannot carry over stops the update with what to do, rather than being dropped."""
    registered = {r["name"] for r in plpy.execute("SELECT name FROM fastembed_ext.model_registry")}
    for row in plpy.execute("SELECT tbl::text AS t, model FROM fastembed_ext.attachments ORDER BY 1"):
        if row["model"] not in registered:
            fail(
                f'{row["t"]} is attached with model "{row["model"]}", which is not a registered name',
                sqlstate="55000",
                detail="From 0.2.0 attachments use registered names, pinned to their content.",
                hint=f"Register it under a name and attach the table again with that name, or detach it "
                f"(SELECT fastembed_ext.detach_embedding('{row['t']}', ...)); then run ALTER EXTENSION "
                "fastembed_ext UPDATE again.",
            )
    for row in plpy.execute("SELECT name, path FROM fastembed_ext.model_registry ORDER BY name"):
        name, path = row["name"], row["path"]
        if not _valid_name(name):
            fail(
                f'model name "{name}" is not a valid name from 0.2.0 on',
                sqlstate="55000",
                detail=f"A name is 1 to {_NAME_MAX_BYTES} characters: letters, digits and _ . @ + -.",
                hint="Register the bundle under a valid name, move what uses the old name to it, "
                "unregister the old one, and run ALTER EXTENSION fastembed_ext UPDATE again.",
            )
        if not os.path.isfile(os.path.join(path, MANIFEST_FILE)):
            fail(
                f'model "{name}" is registered from "{path}", which is not a fastembed_ext bundle',
                sqlstate="55000",
                detail="From 0.2.0 the server loads only bundles, pinned to their content.",
                hint=f"Run `fastembed-ext pg install` (it exports such models first), or export it "
                f"yourself (fastembed-ext export {path} /path/to/bundles/{name}), point the "
                f"registration at the bundle with SELECT fastembed_ext.register_model('{name}', "
                "'/path/to/bundles/...') and run ALTER EXTENSION fastembed_ext UPDATE again.",
            )
        register(backend, plpy, name, path, check_dependents=False)
    setting = plpy.execute(
        """SELECT pg_catalog.split_part(s.cfg, '=', 2) AS value
           FROM pg_catalog.pg_db_role_setting r, pg_catalog.unnest(r.setconfig) s(cfg)
           WHERE r.setdatabase = (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database())
             AND r.setrole = 0 AND s.cfg LIKE 'fastembed\\_ext.default\\_model=%'"""
    )
    if setting:
        default = setting[0]["value"]
        if default not in registered:
            fail(
                f'the database\'s default model "{default}" is not a registered name',
                sqlstate="55000",
                detail="From 0.2.0 the default model is a registered name, pinned like any other.",
                hint=f"Register it (SELECT fastembed_ext.register_model('name', '{default}') if it is a "
                "bundle path) and point the setting at the name: ALTER DATABASE ... SET "
                "fastembed_ext.default_model = 'name'; then run ALTER EXTENSION fastembed_ext UPDATE again.",
            )
        set_default(backend, plpy, default)
        plpy.execute("ALTER DATABASE " + plpy.quote_ident(
            plpy.execute("SELECT pg_catalog.current_database() AS d")[0]["d"]) + " RESET fastembed_ext.default_model")


def _utc_now() -> str:
    import datetime  # only when registering: every new backend imports this module

    return datetime.datetime.now(datetime.timezone.utc).isoformat()
