"""XenAPI for the drivers, served from the toolstack's database.

Under xapi a storage driver keeps xapi's VDI and SR records itself, over the
session xapi hands it (smlib/xapi/db.py). This toolstack plays xapi's part:
while it runs drivers it serves, on a Unix socket, the XenAPI calls drivers
make (``VDI.db_introduce`` / ``db_forget`` / ``get_by_uuid`` /
``get_all_records_where``, the VDI and SR field getters and setters, the
``sm_config`` map calls, ``VDI.get_uuid``) from its SQLite database, with
xapi's wire shape: XML-RPC over HTTP, every answer a ``Status`` / ``Value``
or ``ErrorDescription`` struct, sizes as decimal strings, the same error
codes (SESSION_INVALID, HANDLE_INVALID, UUID_INVALID, ...). The runner
passes the socket's path to drivers in ``SMLIB_XAPI_SOCKET``.

One thread serves the socket with its own database connection; drivers run
one at a time, and every write is one transaction.
"""

import atexit
import datetime
import os
import re
import shutil
import socketserver
import tempfile
import threading
import uuid as uuidlib
import xmlrpc.client
from typing import Any, Callable, Optional
from xmlrpc.server import SimpleXMLRPCDispatcher, SimpleXMLRPCRequestHandler

from smlib.toolstack.db import Database, SRRecord, VDIRecord

NULL_REF = "OpaqueRef:NULL"


class Failure(Exception):
    """A XenAPI error: its ErrorDescription."""

    def __init__(self, *details: str) -> None:
        super().__init__(*details)
        self.details = [str(d) for d in details]


def _size_out(value: int) -> str:
    return str(int(value))


def _size_in(value: Any) -> int:
    try:
        return int(str(value))
    except ValueError:
        raise Failure("FIELD_TYPE_ERROR", "int64", str(value)) from None


def _bool_in(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise Failure("FIELD_TYPE_ERROR", "bool", str(value))


def _map_in(value: Any) -> dict:
    if isinstance(value, dict) and all(isinstance(v, str) for v in value.values()):
        return dict(value)
    raise Failure("FIELD_TYPE_ERROR", "(string -> string) map", str(value))


def _str_in(value: Any) -> str:
    if isinstance(value, str):
        return value
    raise Failure("FIELD_TYPE_ERROR", "string", str(value))


def _date_out(text: str) -> xmlrpc.client.DateTime:
    return xmlrpc.client.DateTime(text or "19700101T00:00:00Z")


def _date_in(value: Any) -> str:
    if isinstance(value, xmlrpc.client.DateTime):
        return value.value
    if isinstance(value, datetime.datetime):
        return value.strftime("%Y%m%dT%H:%M:%SZ")
    return _str_in(value)


def _ref_out(ref: Optional[str]) -> str:
    return ref or NULL_REF


# XenAPI field -> (record attribute, to wire, from wire, settable by a driver).


def _same(value: Any) -> Any:
    return value


# Fields every served class has.
_NAMED: "dict[str, tuple[str, Callable, Callable, bool]]" = {
    "uuid": ("uuid", _same, _str_in, False),
    "name_label": ("name_label", _same, _str_in, True),
    "name_description": ("name_description", _same, _str_in, True),
    "type": ("type", _same, _str_in, False),
}
VDI_FIELDS: "dict[str, tuple[str, Callable, Callable, bool]]" = dict(_NAMED, **{
    "SR": ("sr_ref", _same, _str_in, False),
    "location": ("location", _same, _str_in, False),
    "read_only": ("read_only", _same, _bool_in, True),
    "sharable": ("sharable", _same, _bool_in, True),
    "managed": ("managed", _same, _bool_in, True),
    "virtual_size": ("virtual_size", _size_out, _size_in, True),
    "physical_utilisation": ("physical_utilisation", _size_out, _size_in, True),
    "sm_config": ("sm_config", _same, _map_in, True),
    "other_config": ("other_config", _same, _map_in, True),
    "is_a_snapshot": ("is_a_snapshot", _same, _bool_in, True),
    "snapshot_of": ("snapshot_of", _ref_out, _str_in, True),
    "snapshot_time": ("snapshot_time", _date_out, _date_in, True),
    "metadata_of_pool": ("metadata_of_pool", _ref_out, _str_in, True),
    "cbt_enabled": ("cbt_enabled", _same, _bool_in, True),
})
SR_FIELDS: "dict[str, tuple[str, Callable, Callable, bool]]" = dict(_NAMED, **{
    "virtual_allocation": ("virtual_allocation", _size_out, _size_in, True),
    "physical_size": ("physical_size", _size_out, _size_in, True),
    "physical_utilisation": ("physical_utilisation", _size_out, _size_in, True),
})
_CLASSES = {"VDI": (VDIRecord, VDI_FIELDS), "SR": (SRRecord, SR_FIELDS)}

# `field "SR" = "OpaqueRef:..."`, possibly joined by `and`: what drivers query.
_CLAUSE = re.compile(r'\s*field\s*"(\w+)"\s*=\s*"([^"]*)"\s*')


def parse_where(expr: str) -> "list[tuple[str, str]]":
    clauses = []
    for part in re.split(r"\band\b", expr):
        m = _CLAUSE.fullmatch(part)
        if m is None:
            raise Failure("INTERNAL_ERROR", f"unsupported expression {expr!r}")
        clauses.append((m.group(1), m.group(2)))
    return clauses


class API:
    """The XenAPI methods, over one database connection (the serving thread's)."""

    def __init__(self, db_path: str, sessions: "set[str]") -> None:
        self.db_path = db_path
        self.sessions = sessions
        self._db: Optional[Database] = None
        self.calls: list[str] = []

    @property
    def db(self) -> Database:
        if self._db is None:
            self._db = Database(self.db_path)
        return self._db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def call(self, method: str, params: list) -> Any:
        self.calls.append(method)
        if method == "session.login_with_password":
            ref = f"OpaqueRef:{uuidlib.uuid4()}"
            self.sessions.add(ref)
            return ref
        if not params or params[0] not in self.sessions:
            raise Failure("SESSION_INVALID", str(params[0]) if params else "")
        args = params[1:]
        if method == "session.logout":
            self.sessions.discard(params[0])
            return ""
        cls, _, op = method.partition(".")
        if cls not in _CLASSES:
            raise Failure("MESSAGE_METHOD_UNKNOWN", method)
        special = getattr(self, f"{cls}_{op}", None)
        if special is not None:
            return special(*self._arity(method, args, special.__code__.co_argcount - 1))
        record_cls, fields = _CLASSES[cls]
        for prefix in ("get_", "set_"):
            if op.startswith(prefix) and op[len(prefix):] in fields:
                attr, out, inp, settable = fields[op[len(prefix):]]
                if prefix == "get_":
                    (ref,) = self._arity(method, args, 1)
                    return out(getattr(self._get(record_cls, cls, ref), attr))
                if not settable:
                    break
                ref, value = self._arity(method, args, 2)
                self.db.update(self._get(record_cls, cls, ref), **{attr: inp(value)})
                return ""
        raise Failure("MESSAGE_METHOD_UNKNOWN", method)

    @staticmethod
    def _arity(method: str, args: list, n: int) -> list:
        if len(args) != n:
            raise Failure("MESSAGE_PARAMETER_COUNT_MISMATCH", method, str(n), str(len(args)))
        return args

    def _get(self, record_cls: type, cls: str, ref: Any) -> Any:
        rec = self.db.get(record_cls, ref) if isinstance(ref, str) else None
        if rec is None:
            raise Failure("HANDLE_INVALID", cls, str(ref))
        return rec

    def _by_uuid(self, record_cls: type, cls: str, uuid: Any) -> Any:
        rec = self.db.by_uuid(record_cls, uuid) if isinstance(uuid, str) else None
        if rec is None:
            raise Failure("UUID_INVALID", cls, str(uuid))
        return rec

    @staticmethod
    def record(rec: Any, fields: dict) -> dict:
        return {name: out(getattr(rec, attr)) for name, (attr, out, _in, _s) in fields.items()}

    # ---------------------------------------------------------------- SR

    def SR_get_by_uuid(self, uuid: str) -> str:
        return self._by_uuid(SRRecord, "SR", uuid).ref

    def SR_get_record(self, ref: str) -> dict:
        return self.record(self._get(SRRecord, "SR", ref), SR_FIELDS)

    # --------------------------------------------------------------- VDI

    def VDI_get_by_uuid(self, uuid: str) -> str:
        return self._by_uuid(VDIRecord, "VDI", uuid).ref

    def VDI_get_record(self, ref: str) -> dict:
        return self.record(self._get(VDIRecord, "VDI", ref), VDI_FIELDS)

    def VDI_get_all_records(self) -> dict:
        return {r.ref: self.record(r, VDI_FIELDS) for r in self.db.select(VDIRecord)}

    def VDI_get_all_records_where(self, expr: str) -> dict:
        wanted = parse_where(_str_in(expr))
        out = {}
        for rec in self.db.select(VDIRecord):
            full = self.record(rec, VDI_FIELDS)
            if all(str(full.get(k)) == v for k, v in wanted):
                out[rec.ref] = full
        return out

    def VDI_db_introduce(self, uuid, name_label, name_description, sr, vdi_type, sharable,
                         read_only, other_config, location, xenstore_data, sm_config,
                         managed, virtual_size, physical_utilisation, metadata_of_pool,
                         is_a_snapshot, snapshot_time, snapshot_of, cbt_enabled) -> str:
        self._get(SRRecord, "SR", sr)
        uuid = _str_in(uuid)
        if self.db.by_uuid(VDIRecord, uuid) is not None:
            raise Failure("UUID_ALREADY_EXISTS", "VDI", uuid)
        _map_in(xenstore_data)
        rec = VDIRecord(
            ref=f"OpaqueRef:{uuidlib.uuid4()}", uuid=uuid, sr_ref=sr,
            location=_str_in(location), name_label=_str_in(name_label),
            name_description=_str_in(name_description), type=_str_in(vdi_type) or "user",
            sharable=_bool_in(sharable), read_only=_bool_in(read_only),
            other_config=_map_in(other_config), sm_config=_map_in(sm_config),
            managed=_bool_in(managed), virtual_size=_size_in(virtual_size),
            physical_utilisation=_size_in(physical_utilisation),
            metadata_of_pool=_none_if_null(_str_in(metadata_of_pool)) or "",
            is_a_snapshot=_bool_in(is_a_snapshot), snapshot_time=_date_in(snapshot_time),
            snapshot_of=_none_if_null(_str_in(snapshot_of)), cbt_enabled=_bool_in(cbt_enabled),
        )
        self.db.insert(rec)
        return rec.ref

    def VDI_db_forget(self, ref: str) -> str:
        # As xapi: the record goes; VBDs naming it are the toolstack's to clean.
        self.db.delete(self._get(VDIRecord, "VDI", ref))
        return ""

    def VDI_add_to_sm_config(self, ref: str, key: str, value: str) -> str:
        return self._map_change(ref, "sm_config", _str_in(key), _str_in(value))

    def VDI_remove_from_sm_config(self, ref: str, key: str) -> str:
        return self._map_change(ref, "sm_config", _str_in(key), None)

    def VDI_add_to_other_config(self, ref: str, key: str, value: str) -> str:
        return self._map_change(ref, "other_config", _str_in(key), _str_in(value))

    def VDI_remove_from_other_config(self, ref: str, key: str) -> str:
        return self._map_change(ref, "other_config", _str_in(key), None)

    def _map_change(self, ref: str, field: str, key: str, value: Optional[str]) -> str:
        with self.db.transaction():
            rec = self._get(VDIRecord, "VDI", ref)
            current = dict(getattr(rec, field))
            if value is None:
                current.pop(key, None)
            elif key in current:
                raise Failure("MAP_DUPLICATE_KEY", "VDI", field, ref, key)
            else:
                current[key] = value
            self.db.update(rec, **{field: current})
        return ""


def _none_if_null(ref: str) -> Optional[str]:
    return None if not ref or ref == NULL_REF else ref


class _Handler(SimpleXMLRPCRequestHandler):
    disable_nagle_algorithm = False  # a TCP option: Unix sockets refuse it

    def address_string(self) -> str:  # Unix sockets have no peer address
        return "unix"

    def log_message(self, *args: Any) -> None:
        return None


class _Server(socketserver.UnixStreamServer, SimpleXMLRPCDispatcher):
    logRequests = False

    def __init__(self, path: str, api: API) -> None:
        SimpleXMLRPCDispatcher.__init__(self, allow_none=True, encoding=None)
        socketserver.UnixStreamServer.__init__(self, path, _Handler)
        self.api = api

    def _dispatch(self, method: str, params: tuple) -> dict:
        try:
            return {"Status": "Success", "Value": self.api.call(method, list(params))}
        except Failure as f:
            return {"Status": "Failure", "ErrorDescription": f.details}
        except (TypeError, ValueError, KeyError) as e:
            return {"Status": "Failure", "ErrorDescription": ["INTERNAL_ERROR", str(e)]}


class XapiServer:
    """The socket, its serving thread and the sessions it accepts."""

    SOCKET_ENV = "SMLIB_XAPI_SOCKET"  # how drivers find it (smlib.config)

    def __init__(self, db_path: str) -> None:
        if db_path == ":memory:":
            raise ValueError("drivers cannot reach an in-memory database: give a file")
        self.db_path = db_path
        self.sessions: set[str] = set()
        self.api = API(db_path, self.sessions)
        self.path: Optional[str] = None
        self._dir: Optional[str] = None
        self._server: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None

    def start(self) -> str:
        if self.path is not None:
            return self.path
        self._dir = tempfile.mkdtemp(prefix="smctl-xapi-")
        path = os.path.join(self._dir, "xapi")
        self._server = _Server(path, self.api)
        self._thread = threading.Thread(target=self._serve, name="xapi", daemon=True)
        self._thread.start()
        self.path = path
        atexit.register(self.stop)  # the socket's directory goes with the process
        return path

    def _serve(self) -> None:
        try:
            self._server.serve_forever(poll_interval=0.2)
        finally:
            self.api.close()

    def new_session(self) -> str:
        ref = f"OpaqueRef:{uuidlib.uuid4()}"
        self.sessions.add(ref)
        return ref

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
        shutil.rmtree(self._dir, ignore_errors=True)
        self._server = self._thread = None
        self.path = self._dir = None
