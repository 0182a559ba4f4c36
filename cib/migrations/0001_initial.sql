-- CIB schema, version 1. Times are Unix milliseconds (INTEGER).
-- Every table uses AUTOINCREMENT so that a deleted row's id is never handed
-- out again (sqlite_sequence persists across restarts).

-- ===== devices =====
CREATE TABLE device (
    id                   INTEGER PRIMARY KEY AUTOINCREMENT,
    name                 TEXT    NOT NULL UNIQUE,
    address              TEXT    NOT NULL,            -- host:port of the NETCONF/SSH agent
    username             TEXT    NOT NULL,
    ssh_key_path         TEXT    NOT NULL,
    host_key_fingerprint TEXT,                        -- 'SHA256:...'; NULL until first connect (TOFU)
    role                 TEXT,
    labels               TEXT    NOT NULL DEFAULT '', -- comma-separated, validated without commas
    added_at             INTEGER NOT NULL
);

-- Per-device module-id counter. Keyed by device *name*, with no foreign key,
-- so it survives removing and re-adding a device: an id once given to a name
-- is never given again (the device may still run that module).
CREATE TABLE module_id_counter (
    device_name TEXT    PRIMARY KEY,
    next_id     INTEGER NOT NULL CHECK (next_id BETWEEN 1 AND 4294967296)
);

-- ===== middleboxes =====
CREATE TABLE middlebox (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    name     TEXT    NOT NULL UNIQUE,
    address  TEXT    NOT NULL,
    mb_type  TEXT    NOT NULL,
    added_at INTEGER NOT NULL
);

-- ===== module kinds and built instances =====
CREATE TABLE module_kind (
    name        TEXT PRIMARY KEY,
    description TEXT NOT NULL
);

INSERT INTO module_kind (name, description) VALUES
    ('dns-front-tag',        'client prepends a tag to DNS queries; server strips it, drops untagged'),
    ('dns-middle-tag',       'tag after the 12-byte DNS header; server removes it, drops untagged'),
    ('dns-end-tag',          'tag appended to DNS queries; server strips it, passes untagged'),
    ('dns-compression',      'client sends ID, QNAME, QTYPE, QCLASS only; server rebuilds the header'),
    ('dns-clearance-filter', 'server requires a 32-byte clearance code in front of each query'),
    ('stream-tag',           'server inserts a tag every N stream bytes; client strips it'),
    ('rate-limit',           'every send waits a fixed delay'),
    ('app-id-tag',           'tags messages with the process or thread name and a label');

-- One row per built instance. The configuration columns hold what the
-- device has confirmed (or, before the deploy is confirmed, what the deploy
-- will send); requests carry the target values and update these columns
-- when the device confirms them.
CREATE TABLE module (
    id                   INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id            INTEGER NOT NULL REFERENCES device(id) ON DELETE CASCADE,
    module_id            INTEGER NOT NULL CHECK (module_id BETWEEN 1 AND 4294967295),
    name                 TEXT    NOT NULL,
    kind                 TEXT    NOT NULL REFERENCES module_kind(name),
    priority             INTEGER NOT NULL CHECK (priority BETWEEN 0 AND 65535),
    activated            INTEGER NOT NULL CHECK (activated IN (0, 1)),
    deprecated           INTEGER NOT NULL DEFAULT 0 CHECK (deprecated IN (0, 1)),
    attach               TEXT    NOT NULL CHECK (attach IN ('new-sockets', 'immediate')),
    match_protocol       TEXT    CHECK (match_protocol IN ('tcp', 'udp', 'any')),
    match_source_address TEXT,
    match_source_port    INTEGER CHECK (match_source_port BETWEEN 0 AND 65535),
    match_destination_address TEXT,
    match_destination_port    INTEGER CHECK (match_destination_port BETWEEN 0 AND 65535),
    match_thread_name    TEXT,
    match_process_name   TEXT,
    security_key         BLOB    NOT NULL CHECK (length(security_key) = 32),
    status               TEXT    NOT NULL DEFAULT 'built'
                                 CHECK (status IN ('built', 'deployed', 'revoked')),
    created_at           INTEGER NOT NULL,
    deployed_at          INTEGER,
    revoked_at           INTEGER,
    UNIQUE (device_id, module_id)
);
-- Operators address modules by name: unique per device among live modules.
CREATE UNIQUE INDEX module_live_name ON module(device_id, name) WHERE status <> 'revoked';
CREATE INDEX module_kind_idx ON module(kind);

CREATE TABLE module_parameter (
    module_row INTEGER NOT NULL REFERENCES module(id) ON DELETE CASCADE,
    position   INTEGER NOT NULL,  -- keeps the operator's order
    name       TEXT    NOT NULL,
    value      TEXT    NOT NULL,
    PRIMARY KEY (module_row, name)
);

-- ===== requests (work for the NCO) =====
-- State machine: pending -> sent -> confirmed
--                              \-> pending (retry with backoff, or requeued after a crash)
--                              \-> failed  (permanent error or attempts exhausted)
--                pending|sent -> cancelled
CREATE TABLE request (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    module_row      INTEGER NOT NULL REFERENCES module(id) ON DELETE CASCADE,
    action          TEXT    NOT NULL CHECK (action IN
                        ('deploy', 'revoke', 'deprecate', 'activate', 'deactivate', 'set-priority')),
    priority_value  INTEGER CHECK (priority_value BETWEEN 0 AND 65535),
    state           TEXT    NOT NULL DEFAULT 'pending' CHECK (state IN
                        ('pending', 'sent', 'confirmed', 'failed', 'cancelled')),
    attempts        INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts    INTEGER NOT NULL CHECK (max_attempts >= 1),
    not_before      INTEGER NOT NULL,  -- the operator's "deploy at T"
    next_attempt_at INTEGER NOT NULL,  -- not_before, then pushed out by backoff
    last_error      TEXT,
    created_at      INTEGER NOT NULL,
    sent_at         INTEGER,
    finished_at     INTEGER,
    CHECK ((action = 'set-priority') = (priority_value IS NOT NULL))
);
-- At most one open request per (module, action): resubmitting is a duplicate.
CREATE UNIQUE INDEX request_open_per_action ON request(module_row, action)
    WHERE state IN ('pending', 'sent');
CREATE INDEX request_due ON request(state, next_attempt_at);
CREATE INDEX request_module ON request(module_row, id);

-- ===== device-reported state =====
CREATE TABLE deployment (
    module_row          INTEGER PRIMARY KEY REFERENCES module(id) ON DELETE CASCADE,
    state               TEXT    NOT NULL CHECK (state IN ('registered', 'active', 'deprecated', 'revoked')),
    activated           INTEGER CHECK (activated IN (0, 1)),
    active_ts           TEXT,     -- as the device reported it (yang:date-and-time)
    socket_count        INTEGER NOT NULL DEFAULT 0,
    bytes_sent          INTEGER NOT NULL DEFAULT 0,
    bytes_received      INTEGER NOT NULL DEFAULT 0,
    messages_sent       INTEGER NOT NULL DEFAULT 0,
    messages_received   INTEGER NOT NULL DEFAULT 0,
    errors              INTEGER NOT NULL DEFAULT 0,
    last_report_at      INTEGER NOT NULL,
    last_security_check INTEGER,
    last_security_ok    INTEGER CHECK (last_security_ok IN (0, 1)),
    security_failures   INTEGER NOT NULL DEFAULT 0
);

-- ===== history and alerts =====
-- Append-only. Device and module are stored by value (name, module id), not
-- as foreign keys, so history outlives the rows it talks about.
CREATE TABLE history (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    at        INTEGER NOT NULL,
    device    TEXT,
    module_id INTEGER,
    event     TEXT    NOT NULL,
    detail    TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX history_device ON history(device, id);
CREATE INDEX history_module ON history(device, module_id, id);

CREATE TRIGGER history_is_append_only_update BEFORE UPDATE ON history
BEGIN SELECT RAISE(ABORT, 'history is append-only'); END;
CREATE TRIGGER history_is_append_only_delete BEFORE DELETE ON history
BEGIN SELECT RAISE(ABORT, 'history is append-only'); END;

CREATE TABLE alert (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    at              INTEGER NOT NULL,
    severity        TEXT    NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
    device          TEXT,
    module_id       INTEGER,
    kind            TEXT    NOT NULL,
    message         TEXT    NOT NULL,
    acknowledged    INTEGER NOT NULL DEFAULT 0 CHECK (acknowledged IN (0, 1)),
    acknowledged_at INTEGER
);
CREATE INDEX alert_open ON alert(acknowledged, id);

-- ===== inverse modules and their middlebox deployments =====
CREATE TABLE inverse_module (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    kind           TEXT    NOT NULL REFERENCES module_kind(name),
    mb_type        TEXT    NOT NULL,
    artefact_name  TEXT    NOT NULL,
    content_sha256 TEXT    NOT NULL CHECK (length(content_sha256) = 64),
    updated_at     INTEGER NOT NULL,
    UNIQUE (kind, mb_type)
);

-- One row per (middlebox, module instance): the inverse is generated from the
-- instance's parameters (docs/dissectors.md), so it is per instance.
CREATE TABLE middlebox_deployment (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    middlebox_id   INTEGER NOT NULL REFERENCES middlebox(id) ON DELETE CASCADE,
    module_row     INTEGER NOT NULL REFERENCES module(id) ON DELETE CASCADE,
    inverse_id     INTEGER NOT NULL REFERENCES inverse_module(id),
    state          TEXT    NOT NULL DEFAULT 'pending'
                           CHECK (state IN ('pending', 'deployed', 'failed', 'removed')),
    content_sha256 TEXT    CHECK (content_sha256 IS NULL OR length(content_sha256) = 64),
    last_error     TEXT,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    UNIQUE (middlebox_id, module_row)
);
