-- CIB schema, version 2: devices that call home (RFC 8071), the data a
-- device reports about itself, devices waiting for the operator, and
-- one-time enrollment tokens.

-- 1: the device calls the NCO; `address` is where its last call came from.
ALTER TABLE device ADD COLUMN call_home INTEGER NOT NULL DEFAULT 0;

-- What a device reported about itself (/l45:device), last check-in.
CREATE TABLE device_data (
    device_id             INTEGER PRIMARY KEY REFERENCES device(id) ON DELETE CASCADE,
    host_name             TEXT    NOT NULL,
    machine_id            TEXT    NOT NULL,
    architecture          TEXT    NOT NULL,
    os_name               TEXT    NOT NULL,
    kernel_release        TEXT    NOT NULL,
    agent_version         TEXT    NOT NULL,
    tap_backend           TEXT    NOT NULL,
    userspace_abi_version INTEGER,
    kernel_module_release TEXT,
    kinds                 TEXT    NOT NULL,            -- comma-separated YANG identity names
    last_start            TEXT,                        -- as reported (yang:date-and-time)
    checked_in_at         INTEGER NOT NULL
);
CREATE INDEX device_data_machine ON device_data(machine_id);

-- A device that called with a host key the CIB does not know and no valid
-- enrollment token: waits for `devices accept` (or was rejected).
CREATE TABLE pending_device (
    id                    INTEGER PRIMARY KEY AUTOINCREMENT,
    host_key_fingerprint  TEXT    NOT NULL UNIQUE,
    name                  TEXT    NOT NULL UNIQUE,     -- proposed: the host name, made unique
    state                 TEXT    NOT NULL CHECK (state IN ('pending', 'rejected')),
    peer                  TEXT    NOT NULL,            -- host:port the call came from
    username              TEXT    NOT NULL,            -- what the NCO logged in as
    ssh_key_path          TEXT    NOT NULL,
    host_name             TEXT    NOT NULL,
    machine_id            TEXT    NOT NULL,
    architecture          TEXT    NOT NULL,
    os_name               TEXT    NOT NULL,
    kernel_release        TEXT    NOT NULL,
    agent_version         TEXT    NOT NULL,
    tap_backend           TEXT    NOT NULL,
    userspace_abi_version INTEGER,
    kernel_module_release TEXT,
    kinds                 TEXT    NOT NULL,
    last_start            TEXT,
    first_seen_at         INTEGER NOT NULL,
    last_seen_at          INTEGER NOT NULL,
    calls                 INTEGER NOT NULL
);

-- One-time enrollment tokens (`devices enroll NAME`): only the SHA-256 of
-- the token is stored; used once, before it expires.
CREATE TABLE enrollment (
    id                   INTEGER PRIMARY KEY AUTOINCREMENT,
    device_name          TEXT    NOT NULL,
    token_sha256         TEXT    NOT NULL UNIQUE,     -- hex
    role                 TEXT,
    labels               TEXT    NOT NULL DEFAULT '',
    created_at           INTEGER NOT NULL,
    expires_at           INTEGER NOT NULL,
    used_at              INTEGER,
    used_by_fingerprint  TEXT
);
CREATE INDEX enrollment_device ON enrollment(device_name);
