-- CIB schema, version 3: module images (kinds that are not built in),
-- built and signed by the NCO, and where they are installed.

-- A signed image the NCO built or pushed; `path` is where the image file
-- was (its manifest and signature beside it).
CREATE TABLE image (
    sha256       TEXT    PRIMARY KEY CHECK (length(sha256) = 64),
    kind         TEXT    NOT NULL,
    target       TEXT    NOT NULL,
    size         INTEGER NOT NULL CHECK (size >= 0),
    signer       TEXT    NOT NULL,                     -- key id
    built_at     TEXT    NOT NULL,                     -- from the manifest
    path         TEXT    NOT NULL,
    recorded_at  INTEGER NOT NULL
);
CREATE INDEX image_kind ON image(kind);

-- A device accepted an image (install-module answered).
CREATE TABLE image_install (
    device_id    INTEGER NOT NULL REFERENCES device(id) ON DELETE CASCADE,
    sha256       TEXT    NOT NULL REFERENCES image(sha256),
    installed_at INTEGER NOT NULL,
    PRIMARY KEY (device_id, sha256)
);
