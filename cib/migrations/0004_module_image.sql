-- CIB schema, version 4: a module deployed with its image
-- (`l45-nco modules deploy --image`). Its deploy request installs that
-- image on the device first (unless the device already holds it), so the
-- image is a step of the request and resumes with it after a crash.
ALTER TABLE module ADD COLUMN image_sha256 TEXT REFERENCES image(sha256);

-- The image's Ed25519 signature over its manifest (128 hex digits), so the
-- CIB holds what vouches for each image; NULL for an image recorded
-- before this version.
ALTER TABLE image ADD COLUMN signature TEXT
    CHECK (signature IS NULL OR (length(signature) = 128 AND signature NOT GLOB '*[^0-9a-f]*'));
