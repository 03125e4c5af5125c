-- pepnet.precision = 'int8' sums each matmul's K products of u8 x s8 values in int32, exact only
-- while K * 255 * 127 < 2^31 (K <= 65536, docs/model.md "int8 scoring").  A model with a wider
-- int8 matmul (EPNet's layer 2 reads epnet_hidden values, up to 262,144; EPNet's and aux's layer 1
-- read x0, up to 262,144) is refused under int8 (54000) instead of scoring with wrapped sums.
-- Asserted with weights whose int8 sums are the largest possible: every input 255, every weight 127.
\set VERBOSITY terse
SET client_min_messages = warning;
CREATE FUNCTION i8l_error(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE d text;
BEGIN
	EXECUTE q;
	RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS d = PG_EXCEPTION_DETAIL;
	RETURN SQLSTATE || ': ' || SQLERRM || ' / ' || d;
END $$;

-- a safetensors blob of F32 tensors, each filled with one value: spec [[name, [dims], value], ...]
-- (float4send is big-endian, safetensors little-endian)
CREATE FUNCTION i8l_blob(spec jsonb) RETURNS bytea LANGUAGE plpgsql AS $$
DECLARE
	t jsonb; hdr jsonb := '{}'; data bytea := ''; n bigint; off bigint := 0; h text;
BEGIN
	FOR t IN SELECT * FROM jsonb_array_elements(spec) LOOP
		SELECT coalesce(exp(sum(ln(d::numeric))), 1)::bigint INTO n FROM jsonb_array_elements_text(t->1) d;
		hdr := hdr || jsonb_build_object(t->>0, jsonb_build_object('dtype', 'F32', 'shape', t->1,
		                                                           'data_offsets', jsonb_build_array(off, off + 4 * n)));
		h := encode(float4send((t->>2)::float4), 'hex');
		data := data || decode(repeat(substr(h, 7, 2) || substr(h, 5, 2) || substr(h, 3, 2) || substr(h, 1, 2), n::int), 'hex');
		off := off + 4 * n;
	END LOOP;
	h := hdr::text;
	h := h || repeat(' ', (8 - octet_length(h) % 8) % 8);
	RETURN int8send(octet_length(h)::bigint) || convert_to(h, 'UTF8') || data;
END $$;
-- int8send is big-endian: the header length is little-endian
CREATE FUNCTION i8l_st(spec jsonb) RETURNS bytea LANGUAGE plpgsql AS $$
DECLARE b bytea := i8l_blob(spec); len bytea := substring(b from 1 for 8); r bytea := '\x';
BEGIN
	FOR i IN REVERSE 8..1 LOOP r := r || substring(len from i for 1); END LOOP;
	RETURN r || substring(b from 9);
END $$;

-- EPNet's layer 2 with 70,000 inputs (epnet_hidden), every other part off: x0 = [1], dv = [1],
-- EPNet's hidden = relu(1 + 1) = 2 everywhere (u8: 255), its layer-2 weights 1 (s8: 127), so an
-- int8 sum of 70,000 * 255 * 127 > 2^31; fp32: the gate is 2 * sigmoid(140000) = 2, x = 2, logit 2
\set ecfg '{"domains": 1, "features": [{"name": "a", "buckets": 1}], "dense": 0, "emb_dim": 1, "hidden": [1], "epnet_hidden": 70000, "ppnet": false, "pn": false, "aux": false, "star": false}'
SELECT pepnet_import('i8l_ep', :'ecfg', i8l_st('[["emb.feature.0", [1, 1], 1], ["emb.domain", [1, 1], 1],
  ["epnet.w1", [70000, 2], 1], ["epnet.b1", [70000], 0], ["epnet.w2", [1, 70000], 1], ["epnet.b2", [1], 0],
  ["tower.0.1.w", [1, 1], 1], ["tower.0.1.b", [1], 0], ["tower.0.2.w", [1, 1], 1], ["tower.0.2.b", [1], 0]]')) AS v;
SET pepnet.precision = 'fp32';
SELECT abs(score - 1 / (1 + exp(-2))) < 1e-6 AS fp32_logit_2 FROM pepnet_score('i8l_ep', 0, NULL, '{0}');
SET pepnet.precision = 'int8';
-- refused in every batched form (the score would be 0.5: the wrapped sum closes the gate)
SELECT i8l_error($$SELECT score FROM pepnet_score('i8l_ep', 0, NULL, '{0}')$$);
SELECT i8l_error($$SELECT score FROM pepnet_score_query('i8l_ep', 'SELECT 0 AS domain, ARRAY[0]::bigint[] AS features') AS t(score float8, scores float8[])$$);
SELECT i8l_error($$SELECT task, logloss FROM pepnet_evaluate('i8l_ep', 'SELECT 0 AS domain, ARRAY[0]::bigint[] AS features, 1 AS label')$$);
-- 65,536 inputs is the widest exact sum: scored, equal to fp32 within 1e-2
\set ecfg2 '{"domains": 1, "features": [{"name": "a", "buckets": 1}], "dense": 0, "emb_dim": 1, "hidden": [1], "epnet_hidden": 65536, "ppnet": false, "pn": false, "aux": false, "star": false}'
SELECT pepnet_import('i8l_ep2', :'ecfg2', i8l_st('[["emb.feature.0", [1, 1], 1], ["emb.domain", [1, 1], 1],
  ["epnet.w1", [65536, 2], 1], ["epnet.b1", [65536], 0], ["epnet.w2", [1, 65536], 1], ["epnet.b2", [1], 0],
  ["tower.0.1.w", [1, 1], 1], ["tower.0.1.b", [1], 0], ["tower.0.2.w", [1, 1], 1], ["tower.0.2.b", [1], 0]]')) AS v;
SELECT abs(score - 1 / (1 + exp(-2))) < 1e-2 AS int8_at_the_bound FROM pepnet_score('i8l_ep2', 0, NULL, '{0}');

-- EPNet's and aux's layer 1 read x0 (s8): 68 fields of 1,024 (69,632 inputs) are refused too
SELECT pepnet_create('i8l_x0', jsonb_build_object('domains', 1, 'emb_dim', 1024, 'dense', 0, 'hidden', '[1]'::jsonb,
         'epnet_hidden', 1, 'aux_hidden', 1, 'ppnet', false, 'pn', false, 'star', false,
         'features', (SELECT jsonb_agg(jsonb_build_object('name', 'f' || i, 'buckets', 1)) FROM generate_series(1, 68) i)), 1) AS v;
SET pepnet.precision = 'int8';
SELECT i8l_error($$SELECT count(*) FROM pepnet_score('i8l_x0', 0, NULL, array_fill(0::bigint, ARRAY[68]))$$);
SET pepnet.precision = 'fp32';
SELECT count(*) AS fp32_scores FROM pepnet_score('i8l_x0', 0, NULL, array_fill(0::bigint, ARRAY[68]));
RESET pepnet.precision;

-- a logit beyond float32 from the weights alone (a model without dense features: embedding and
-- tower weights 3e38, output weight 0: 0 * inf): 22023 in both precisions, the detail naming the
-- weights, not dense values
\set wcfg '{"domains": 1, "features": [{"name": "a", "buckets": 1}], "dense": 0, "emb_dim": 1, "hidden": [1], "epnet": false, "ppnet": false, "pn": false, "aux": false, "star": false}'
SELECT pepnet_import('i8l_big', :'wcfg', i8l_st('[["emb.feature.0", [1, 1], 3e38], ["emb.domain", [1, 1], 0],
  ["tower.0.1.w", [1, 1], 3e38], ["tower.0.1.b", [1], 0], ["tower.0.2.w", [1, 1], 0], ["tower.0.2.b", [1], 0]]')) AS v;
SELECT i8l_error($$SELECT score FROM pepnet_score('i8l_big', 0, NULL, '{0}')$$);
SET pepnet.precision = 'int8';
SELECT i8l_error($$SELECT score FROM pepnet_score('i8l_big', 0, NULL, '{0}')$$);
RESET pepnet.precision;
SELECT i8l_error($$SELECT pepnet_predict('i8l_big', 0, NULL, '{0}')$$);
