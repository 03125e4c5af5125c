-- pepnet_score keeps the last persona built per cached version (its embeddings and the PPNet
-- gates' persona biases) and reuses it while the same persona ids come again: the scores are
-- bit-identical to a fresh build, another persona or version gets its own, and an error leaves
-- the kept one intact.
\set cfg '{"domains": 2, "features": [{"name": "item", "buckets": 50}, {"name": "hour", "buckets": 24, "hash": false}], "persona": [{"name": "user", "buckets": 100}, {"name": "seg", "buckets": 4, "hash": false}], "dense": 1, "emb_dim": 4, "tasks": ["click", "buy"], "hidden": [8, 4]}'
SELECT pepnet_create('pkept', :'cfg', 1) AS v1, pepnet_create('pkept', :'cfg', 2) AS v2 \gset
SELECT :v2 = :v1 + 1 AS two_versions;
SELECT pepnet_deploy('pkept', :v1);

CREATE TEMP TABLE reqs (req int, persona bigint[]);
INSERT INTO reqs VALUES (1, '{7, 1}'), (2, '{7, 1}'), (3, '{8, 1}'), (4, '{7, 1}'), (5, '{7, 2}'), (6, '{7, 2}'), (7, '{7, 1}');
CREATE TEMP TABLE got (req int, ref text, idx int, scores float8[]);

-- one statement per request, as a client sends them (each its own pepnet_score call)
CREATE FUNCTION score_reqs(ref text, tag text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE r record;
BEGIN
	FOR r IN SELECT * FROM reqs ORDER BY req LOOP
		EXECUTE 'INSERT INTO got SELECT $1, $2, idx, scores FROM pepnet_score($3, 1, $4, ''{{3, 5}, {4, 23}}'', ''{{0.5}, {-1}}'')'
			USING r.req, tag, ref, r.persona;
	END LOOP;
END $$;

-- kept personas (requests in a row with the same persona) against a fresh build per request
SELECT score_reqs('pkept', 'reused');
CREATE FUNCTION score_fresh(ref text, tag text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE r record;
BEGIN
	FOR r IN SELECT * FROM reqs ORDER BY req LOOP
		PERFORM pepnet_cache_clear();
		EXECUTE 'INSERT INTO got SELECT $1, $2, idx, scores FROM pepnet_score($3, 1, $4, ''{{3, 5}, {4, 23}}'', ''{{0.5}, {-1}}'')'
			USING r.req, tag, ref, r.persona;
	END LOOP;
END $$;
SELECT score_fresh('pkept', 'fresh');
SELECT count(*) AS rows, bool_and(a.scores = b.scores) AS identical_to_fresh
FROM got a JOIN got b USING (req, idx) WHERE a.ref = 'reused' AND b.ref = 'fresh';
-- the same persona gives the same scores wherever it comes; another persona others
SELECT count(DISTINCT scores) AS distinct_per_persona FROM got JOIN reqs USING (req) WHERE ref = 'reused' AND idx = 1 GROUP BY persona ORDER BY persona;
SELECT count(DISTINCT scores) AS distinct_over_personas FROM got WHERE ref = 'reused' AND idx = 1;

-- another version deployed: its own persona, its own scores (equal to a fresh build of it)
SELECT pepnet_deploy('pkept', :v2);
SELECT score_reqs('pkept', 'v2');
SELECT score_fresh('pkept@' || :v2, 'v2 fresh');
SELECT bool_and(a.scores = b.scores) AS v2_identical_to_fresh, bool_and(a.scores <> c.scores) AS v2_differs_from_v1
FROM got a JOIN got b USING (req, idx) JOIN got c USING (req, idx)
WHERE a.ref = 'v2' AND b.ref = 'v2 fresh' AND c.ref = 'fresh';
-- back and forth between versions in one session, without clearing the cache
SELECT pepnet_deploy('pkept', :v1);
DELETE FROM got WHERE ref IN ('reused', 'v2');
SELECT score_reqs('pkept', 'reused');
SELECT score_reqs('pkept@' || :v2, 'v2');
SELECT bool_and(a.scores = b.scores) AS v1_again_identical, bool_and(c.scores = d.scores) AS v2_again_identical
FROM got a JOIN got b USING (req, idx) JOIN got c USING (req, idx) JOIN got d USING (req, idx)
WHERE a.ref = 'reused' AND b.ref = 'fresh' AND c.ref = 'v2' AND d.ref = 'v2 fresh';

-- a persona refused (seg out of its 4 ids) between two requests of a kept one: it stays intact
SELECT scores AS kept FROM pepnet_score('pkept', 1, '{7, 1}', '{3, 5}', '{0.5}') \gset
SELECT * FROM pepnet_score('pkept', 1, '{7, 9}', '{3, 5}', '{0.5}');
SELECT scores = :'kept' AS same_after_error FROM pepnet_score('pkept', 1, '{7, 1}', '{3, 5}', '{0.5}');
SELECT scores = (SELECT scores FROM got WHERE ref = 'fresh' AND req = 1 AND idx = 1) AS same_as_fresh
FROM pepnet_score('pkept', 1, '{7, 1}', '{3, 5}', '{0.5}');

-- pepnet_predict (its own persona per call site) agrees to float rounding
SELECT abs(pepnet_predict('pkept', 1, '{7, 1}', '{3, 5}', '{0.5}') - s.score) < 1e-6 AS predict_agrees
FROM pepnet_score('pkept', 1, '{7, 1}', '{3, 5}', '{0.5}') s;

DROP FUNCTION score_reqs(text, text);
DROP FUNCTION score_fresh(text, text);
