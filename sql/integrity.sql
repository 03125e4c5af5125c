-- Integrity of stored versions: pepnet_verify over many fresh versions, binary values (fingerprints)
-- compared as bytes, never as C strings
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pepnet;
RESET client_min_messages;
\set cfg '{"domains": 2, "features": [{"name": "item", "buckets": 20}], "persona": [{"name": "user", "buckets": 5}], "emb_dim": 2, "hidden": [2]}'

-- 1,000 fresh versions (seeds 1..1000): every one verifies; about 1 in 9 fingerprints has a 0x00 byte
SELECT count(pepnet_create('iv', :'cfg', seed => s)) AS created FROM generate_series(1, 1000) s;
SELECT count(*) AS versions,
       count(*) FILTER (WHERE NOT pepnet_verify('iv@' || version)) AS false_verify,
       count(*) FILTER (WHERE position('\x00'::bytea IN fingerprint) > 0) > 50 AS many_with_0x00,
       count(*) FILTER (WHERE get_byte(fingerprint, 0) = 0) > 0 AS some_starting_with_0x00,
       count(*) FILTER (WHERE position('\x00'::bytea IN fingerprint) > 0 AND pepnet_verify('iv@' || version)) AS with_0x00_verified
FROM pepnet.models WHERE name = 'iv';

-- a hand copy whose fingerprint differs from the original only after a 0x00 byte: all 32 bytes count
CREATE TEMP TABLE zero_fp AS
SELECT version, position('\x00'::bytea IN fingerprint) - 1 AS z FROM pepnet.models
WHERE name = 'iv' AND position('\x00'::bytea IN fingerprint) BETWEEN 1 AND 31 ORDER BY version LIMIT 1;
BEGIN;
INSERT INTO pepnet.models (name, version, config, fingerprint, weights_size)
	SELECT 'iv_copy', 1, m.config, set_byte(m.fingerprint, 31, (get_byte(m.fingerprint, 31) + 1) % 256), m.weights_size
	FROM pepnet.models m JOIN zero_fp z USING (version) WHERE m.name = 'iv';
INSERT INTO pepnet.model_chunks SELECT 'iv_copy', 1, c.seq, c.data
	FROM pepnet.model_chunks c JOIN zero_fp z USING (version) WHERE c.name = 'iv';
INSERT INTO pepnet.models (name, version, config, fingerprint, weights_size)
	SELECT 'iv_copy', 2, m.config, m.fingerprint, m.weights_size
	FROM pepnet.models m JOIN zero_fp z USING (version) WHERE m.name = 'iv';
INSERT INTO pepnet.model_chunks SELECT 'iv_copy', 2, c.seq, c.data
	FROM pepnet.model_chunks c JOIN zero_fp z USING (version) WHERE c.name = 'iv';
COMMIT;
SELECT pepnet_verify('iv_copy@1') AS altered_after_0x00_verified, pepnet_verify('iv_copy@2') AS exact_copy_verified;
