-- Identity: users, their devices, refresh tokens.
--
-- The phone number is never stored in clear: phone_ciphertext is
-- AES-256-GCM (nonce || ciphertext+tag) bound to the row by its AAD, and
-- phone_blind_index is an HMAC of the E.164 number used for lookups and as
-- the rate-limit key. Keys are versioned so they can be rotated.

CREATE TABLE IF NOT EXISTS users (
    id                      uuid        PRIMARY KEY,
    email                   text        NOT NULL CHECK (email = lower(email) AND char_length(email) <= 254),
    phone_ciphertext        bytea       NULL,
    phone_key_version       smallint    NULL,
    phone_blind_index       bytea       NULL,
    password_hash           text        NOT NULL,
    status                  text        NOT NULL DEFAULT 'pending'
                                        CHECK (status IN ('pending', 'active', 'suspended', 'closed')),
    kyc_tier                smallint    NOT NULL DEFAULT 0 CHECK (kyc_tier >= 0),
    role                    text        NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'admin')),
    deriv_login_id          text        NULL,
    deriv_currency          text        NULL,
    deriv_full_name         text        NULL,
    deriv_token_ciphertext  bytea       NULL,
    deriv_token_key_version smallint    NULL,
    created_at              timestamptz NOT NULL,
    updated_at              timestamptz NOT NULL,
    -- Operators may have no phone; customers always have one (STK, B2C).
    CHECK (role = 'admin' OR phone_ciphertext IS NOT NULL),
    CHECK ((phone_ciphertext IS NULL) = (phone_blind_index IS NULL)
           AND (phone_ciphertext IS NULL) = (phone_key_version IS NULL))
);

CREATE UNIQUE INDEX IF NOT EXISTS users_email_key ON users (lower(email));
CREATE INDEX IF NOT EXISTS users_phone_blind_index_idx ON users (phone_blind_index);

CREATE TABLE IF NOT EXISTS devices (
    user_id      uuid        NOT NULL REFERENCES users (id),
    device_id    text        NOT NULL CHECK (char_length(device_id) BETWEEN 1 AND 128),
    created_at   timestamptz NOT NULL,
    last_seen_at timestamptz NOT NULL,
    PRIMARY KEY (user_id, device_id)
);

-- One row per refresh token ever issued. token_hash is sha256(token): the
-- token itself is never stored. A login starts a family; every refresh spends
-- the presented token and issues its child in the same family. Presenting a
-- spent token again means it was stolen or replayed: the family is revoked.
CREATE TABLE IF NOT EXISTS refresh_tokens (
    token_hash  bytea       PRIMARY KEY,
    user_id     uuid        NOT NULL REFERENCES users (id),
    device_id   text        NOT NULL,
    family_id   uuid        NOT NULL,
    parent_hash bytea       NULL,
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    spent_at    timestamptz NULL,
    revoked_at  timestamptz NULL
);

CREATE INDEX IF NOT EXISTS refresh_tokens_family_idx ON refresh_tokens (family_id);
CREATE INDEX IF NOT EXISTS refresh_tokens_user_live_idx
    ON refresh_tokens (user_id, device_id) WHERE spent_at IS NULL AND revoked_at IS NULL;
