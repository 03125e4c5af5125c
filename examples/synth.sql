-- examples/synth.sql: a synthetic multi-domain CTR/CVR data set for pepnet.
--
--   psql -v rows=200000 -v seed=1 [-v form=columns] -f examples/synth.sql
--                                          (defaults: rows 200000, seed 0, form arrays)
--
-- Creates synth_train / synth_valid / synth_test (about 80/10/10) in the current schema. With
-- form=arrays, columns for the positional form: domain int, persona bigint[] = {user, age,
-- segment}, features bigint[] = {item, category, hour, device, noise1, noise2}, label real
-- (= click), labels real[] = {click, buy}.  With form=columns, the same rows as columns by name
-- ("inputs": "columns"): domain int, user_id uuid (md5 of 'user' || user), age int, segment int,
-- item_id bigint, category text ('cat-' || category), hour int, device int, noise1 bigint,
-- noise2 bigint, item_views int (see below), click int, buy int.
-- Same rows and seed give the same tables (every draw is a hash of (seed, stream, key); no random()).
--
-- Generating model (N = normal, U = uniform, all drawn once per entity):
--   domain d in 0..3 with shares 35/30/20/15 %, items and users shared by all domains;
--   user u (5000, activity ~ rank^-0.6, Zipf-ish) has age bucket a (8), segment s (20),
--     bias b_u ~ N(0, .5^2), taste t_u = .8 t_s + .6 N(0, I_8) (segment taste t_s ~ N(0, I_8));
--   item i (20000, popularity ~ rank^-0.67) has category c (64), vector v_i = .9 v_c + .45 N(0, I_8),
--     popularity pop_i = ln(20000/rank_i)/ln(20000) - .5;
--   click logit = a_d                                    (calibrated: domain CTRs 2, 5, 9, 15 %)
--               + w_dc        domain x category, w_dc = .3 w_c + .9 N: a category helps in one
--                             domain and hurts in another
--               + 2 k_d pop_i popularity effect of the domain, k_d = +.8, -.4, +.3, -.8
--               + .4 sin(2 pi (hour - phase_d) / 24) + e_d,device
--               + b_u + b_s + g_da     persona bias (g_da = .3 g_a + .3 N: age effect per domain)
--               + <t_u, v_i> / sqrt(8) persona x item affinity
--   buy (only after a click) logit = a'_d + .6 m_s + .5 m_c + .5 <t_u, v_i> / sqrt(8)
--                             (a'_d calibrated to P(buy | click) = 30, 25, 20, 15 % by domain);
--   hour, device (4) and the two noise fields (1000 and 50 ids, no effect) are uniform;
--   item_views (form=columns only; no new effect, no draw that changes the others) is the item's
--     view count, heavy-tailed: floor(50000 exp(.25 N) / rank_i), 1 to about 100,000, so that
--     ln(1 + item_views) is close to a linear function of pop_i (a dense field for "log1p" and
--     "normalize": "zscore").
-- Overall CTR comes out near 6 %, buy rate near 1.3 %. Ids: user 1..5000, item 1000001..1020000,
-- category 0..63, hour 0..23, device 0..3, age 0..7, segment 0..19 (the small ones fit "hash": false).

\if :{?rows}
\else
\set rows 200000
\endif
\if :{?seed}
\else
\set seed 0
\endif
\if :{?form}
\else
\set form arrays
\endif
\set ON_ERROR_STOP on
SELECT :'form' IN ('arrays', 'columns') AS form_ok, :'form' = 'columns' AS by_name \gset
\if :form_ok
\else
DO $$ BEGIN RAISE EXCEPTION 'examples/synth.sql: form must be arrays or columns'; END $$;
\endif

BEGIN;

-- uniform in (0, 1) and standard normal, from (seed, stream, key)
CREATE FUNCTION pg_temp.u(seed int, stream int, k bigint) RETURNS float8
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS
$$ SELECT (((hashint8extended(k, seed::bigint * 1000003 + stream) >> 11) & 9007199254740991)::float8 + 0.5)
          / 9007199254740992.0 $$;
CREATE FUNCTION pg_temp.n(seed int, stream int, k bigint) RETURNS float8
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS
$$ SELECT sqrt(-2 * ln(pg_temp.u(seed, stream, k))) * cos(2 * pi() * pg_temp.u(seed, stream + 500000, k)) $$;
-- a vector of 8 normals
CREATE FUNCTION pg_temp.nv(seed int, stream int, k bigint) RETURNS float8[]
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS
$$ SELECT array_agg(pg_temp.n(seed, stream * 16 + j, k) ORDER BY j) FROM generate_series(0, 7) j $$;

CREATE TEMP TABLE s_dom ON COMMIT DROP AS
SELECT * FROM (VALUES (0, 0.00, 0.35, 0.02, 0.30,  0.8,  0.0),
                      (1, 0.35, 0.65, 0.05, 0.25, -0.4,  6.0),
                      (2, 0.65, 0.85, 0.09, 0.20,  0.3, 12.0),
                      (3, 0.85, 1.00, 0.15, 0.15, -0.8, 18.0))
       v(d, lo, hi, ctr, cvr, popk, phase);

CREATE TEMP TABLE s_seg ON COMMIT DROP AS
SELECT s, 0.5 * pg_temp.n(:seed, 10, s) AS bias, pg_temp.n(:seed, 11, s) AS buy,
       pg_temp.nv(:seed, 12, s) AS taste
FROM generate_series(0, 19) s;

CREATE TEMP TABLE s_cat ON COMMIT DROP AS
SELECT c, pg_temp.nv(:seed, 20, c) AS vec, pg_temp.n(:seed, 21, c) AS buy,
       ARRAY[0.3 * pg_temp.n(:seed, 22, c) + 0.9 * pg_temp.n(:seed, 23, c),
             0.3 * pg_temp.n(:seed, 22, c) + 0.9 * pg_temp.n(:seed, 24, c),
             0.3 * pg_temp.n(:seed, 22, c) + 0.9 * pg_temp.n(:seed, 25, c),
             0.3 * pg_temp.n(:seed, 22, c) + 0.9 * pg_temp.n(:seed, 26, c)] AS w
FROM generate_series(0, 63) c;

-- per (domain, age) and (domain, device) effects, 1-based arrays indexed [d + 1][x + 1]
CREATE TEMP TABLE s_small ON COMMIT DROP AS
SELECT (SELECT array_agg(x ORDER BY d) FROM
          (SELECT d, array_agg(0.3 * pg_temp.n(:seed, 30, a) + 0.3 * pg_temp.n(:seed, 31, d * 8 + a) ORDER BY a) x
           FROM generate_series(0, 3) d, generate_series(0, 7) a GROUP BY d) q) AS age_w,
       (SELECT array_agg(x ORDER BY d) FROM
          (SELECT d, array_agg(0.3 * pg_temp.n(:seed, 32, d * 4 + e) ORDER BY e) x
           FROM generate_series(0, 3) d, generate_series(0, 3) e GROUP BY d) q) AS dev_w;

CREATE TEMP TABLE s_user ON COMMIT DROP AS
SELECT u.id, a.age, a.seg, 0.5 * pg_temp.n(:seed, 40, u.id) AS bias,
       (SELECT array_agg(0.8 * st + 0.6 * nt ORDER BY o)
        FROM unnest(s.taste, pg_temp.nv(:seed, 41, u.id)) WITH ORDINALITY t(st, nt, o)) AS taste
FROM generate_series(1, 5000) u(id)
CROSS JOIN LATERAL (SELECT floor(8 * pg_temp.u(:seed, 42, u.id))::int AS age,
                           floor(20 * pg_temp.u(:seed, 43, u.id))::int AS seg) a
JOIN s_seg s ON s.s = a.seg;
CREATE UNIQUE INDEX ON s_user (id);

CREATE TEMP TABLE s_item ON COMMIT DROP AS
SELECT i.r, 1000000 + i.r AS id, ct.cat, ln(20000.0 / i.r) / ln(20000.0) - 0.5 AS pop,
       (SELECT array_agg(0.9 * cv + 0.45 * nt ORDER BY o)
        FROM unnest(c.vec, pg_temp.nv(:seed, 51, i.r)) WITH ORDINALITY t(cv, nt, o)) AS vec
FROM generate_series(1, 20000) i(r)
CROSS JOIN LATERAL (SELECT floor(64 * pg_temp.u(:seed, 50, i.r))::int AS cat) ct
JOIN s_cat c ON c.c = ct.cat;
CREATE UNIQUE INDEX ON s_item (r);

-- events, without the calibrated intercepts
CREATE TEMP TABLE s_ev ON COMMIT DROP AS
SELECT e.r, dm.d AS domain, us.id AS uid, us.age, us.seg, it.id AS iid, it.cat, e.hour, e.device, e.n1, e.n2,
       c.w[dm.d + 1] + 2 * dm.popk * it.pop
         + 0.4 * sin(2 * pi() * (e.hour - dm.phase) / 24) + sm.dev_w[dm.d + 1][e.device + 1]
         + us.bias + sg.bias + sm.age_w[dm.d + 1][us.age + 1]
         + dot / sqrt(8.0) AS zc,
       0.6 * sg.buy + 0.5 * c.buy + 0.5 * dot / sqrt(8.0) AS zb
FROM (SELECT r,
             pg_temp.u(:seed, 60, r) AS ud,
             1 + floor(5000 * pg_temp.u(:seed, 61, r) ^ 2.5)::int AS urank,
             1 + floor(20000 * pg_temp.u(:seed, 62, r) ^ 3.0)::int AS irank,
             floor(24 * pg_temp.u(:seed, 63, r))::int AS hour,
             floor(4 * pg_temp.u(:seed, 64, r))::int AS device,
             1 + floor(1000 * pg_temp.u(:seed, 65, r))::bigint AS n1,
             1 + floor(50 * pg_temp.u(:seed, 66, r))::bigint AS n2
      FROM generate_series(1, :rows) r) e
JOIN s_dom dm ON e.ud >= dm.lo AND e.ud < dm.hi
JOIN s_user us ON us.id = e.urank
JOIN s_item it ON it.r = e.irank
JOIN s_cat c ON c.c = it.cat
JOIN s_seg sg ON sg.s = us.seg
CROSS JOIN s_small sm
CROSS JOIN LATERAL (SELECT sum(a * b) AS dot FROM unnest(us.taste, it.vec) t(a, b)) dt;

-- intercepts: start from E[sigmoid(a + z)] ~ sigmoid((a + mean z) / sqrt(1 + pi var z / 8)) (probit approximation)
CREATE TEMP TABLE s_cal ON COMMIT DROP AS
SELECT dm.d, ln(dm.ctr / (1 - dm.ctr)) * sqrt(1 + pi() * z.v / 8) - z.m AS ac, dm.ctr, dm.cvr
FROM s_dom dm JOIN (SELECT domain, avg(zc) m, var_pop(zc) v FROM s_ev GROUP BY domain) z ON z.domain = dm.d;

-- then three Newton steps on the exact mean: a += (target - mean p) / mean p(1 - p)
UPDATE s_cal cl SET ac = cl.ac + (cl.ctr - q.mp) / q.mv FROM
  (SELECT e.domain, avg(1 / (1 + exp(-(c.ac + e.zc)))) mp, avg(1 / (1 + exp(-(c.ac + e.zc))) * (1 - 1 / (1 + exp(-(c.ac + e.zc))))) mv
   FROM s_ev e JOIN s_cal c ON c.d = e.domain GROUP BY e.domain) q WHERE q.domain = cl.d;
UPDATE s_cal cl SET ac = cl.ac + (cl.ctr - q.mp) / q.mv FROM
  (SELECT e.domain, avg(1 / (1 + exp(-(c.ac + e.zc)))) mp, avg(1 / (1 + exp(-(c.ac + e.zc))) * (1 - 1 / (1 + exp(-(c.ac + e.zc))))) mv
   FROM s_ev e JOIN s_cal c ON c.d = e.domain GROUP BY e.domain) q WHERE q.domain = cl.d;
UPDATE s_cal cl SET ac = cl.ac + (cl.ctr - q.mp) / q.mv FROM
  (SELECT e.domain, avg(1 / (1 + exp(-(c.ac + e.zc)))) mp, avg(1 / (1 + exp(-(c.ac + e.zc))) * (1 - 1 / (1 + exp(-(c.ac + e.zc))))) mv
   FROM s_ev e JOIN s_cal c ON c.d = e.domain GROUP BY e.domain) q WHERE q.domain = cl.d;

CREATE TEMP TABLE s_click ON COMMIT DROP AS
SELECT e.*, (pg_temp.u(:seed, 70, e.r) < 1 / (1 + exp(-(cl.ac + e.zc))))::int AS click
FROM s_ev e JOIN s_cal cl ON cl.d = e.domain;

CREATE TEMP TABLE s_cal2 ON COMMIT DROP AS
SELECT cl.d, ln(cl.cvr / (1 - cl.cvr)) * sqrt(1 + pi() * z.v / 8) - z.m AS ab
FROM s_cal cl JOIN (SELECT domain, avg(zb) m, var_pop(zb) v FROM s_click WHERE click = 1 GROUP BY domain) z
  ON z.domain = cl.d;
-- same for buy, on the clicked rows
UPDATE s_cal2 cl SET ab = cl.ab + (c1.cvr - q.mp) / q.mv FROM s_cal c1,
  (SELECT e.domain, avg(1 / (1 + exp(-(c.ab + e.zb)))) mp, avg(1 / (1 + exp(-(c.ab + e.zb))) * (1 - 1 / (1 + exp(-(c.ab + e.zb))))) mv
   FROM s_click e JOIN s_cal2 c ON c.d = e.domain WHERE e.click = 1 GROUP BY e.domain) q WHERE q.domain = cl.d AND c1.d = cl.d;
UPDATE s_cal2 cl SET ab = cl.ab + (c1.cvr - q.mp) / q.mv FROM s_cal c1,
  (SELECT e.domain, avg(1 / (1 + exp(-(c.ab + e.zb)))) mp, avg(1 / (1 + exp(-(c.ab + e.zb))) * (1 - 1 / (1 + exp(-(c.ab + e.zb))))) mv
   FROM s_click e JOIN s_cal2 c ON c.d = e.domain WHERE e.click = 1 GROUP BY e.domain) q WHERE q.domain = cl.d AND c1.d = cl.d;
UPDATE s_cal2 cl SET ab = cl.ab + (c1.cvr - q.mp) / q.mv FROM s_cal c1,
  (SELECT e.domain, avg(1 / (1 + exp(-(c.ab + e.zb)))) mp, avg(1 / (1 + exp(-(c.ab + e.zb))) * (1 - 1 / (1 + exp(-(c.ab + e.zb))))) mv
   FROM s_click e JOIN s_cal2 c ON c.d = e.domain WHERE e.click = 1 GROUP BY e.domain) q WHERE q.domain = cl.d AND c1.d = cl.d;

CREATE TEMP TABLE s_lab ON COMMIT DROP AS
SELECT e.*, e.click * (pg_temp.u(:seed, 71, e.r) < 1 / (1 + exp(-(c2.ab + e.zb))))::int AS buy,
       pg_temp.u(:seed, 80, e.r) AS split
FROM s_click e JOIN s_cal2 c2 ON c2.d = e.domain;

-- the tables' columns, by form
\if :by_name
CREATE TEMP TABLE s_all ON COMMIT DROP AS
SELECT r, split, domain, md5('user' || uid)::uuid AS user_id, age, seg AS segment, iid::bigint AS item_id,
       'cat-' || cat AS category, hour, device, n1 AS noise1, n2 AS noise2,
       floor(50000 * exp(0.25 * pg_temp.n(:seed, 90, iid)) / (iid - 1000000))::int AS item_views, click, buy
FROM s_lab;
\set cols 'domain, user_id, age, segment, item_id, category, hour, device, noise1, noise2, item_views, click, buy'
\set click 'click'
\set buy 'buy'
\else
CREATE TEMP TABLE s_all ON COMMIT DROP AS
SELECT r, split, domain, ARRAY[uid, age, seg]::bigint[] AS persona,
       ARRAY[iid, cat, hour, device, n1, n2]::bigint[] AS features,
       click::real AS label, ARRAY[click, buy]::real[] AS labels
FROM s_lab;
\set cols 'domain, persona, features, label, labels'
\set click 'labels[1]'
\set buy 'labels[2]'
\endif

-- quiet: no "does not exist, skipping" notices on the first run (reverts at COMMIT)
SET LOCAL client_min_messages = warning;
DROP TABLE IF EXISTS synth_train, synth_valid, synth_test;
CREATE TABLE synth_train AS SELECT :cols FROM s_all WHERE split < 0.8 ORDER BY r;
CREATE TABLE synth_valid AS SELECT :cols FROM s_all WHERE split >= 0.8 AND split < 0.9 ORDER BY r;
CREATE TABLE synth_test  AS SELECT :cols FROM s_all WHERE split >= 0.9 ORDER BY r;

COMMIT;
ANALYZE synth_train, synth_valid, synth_test;

SELECT t AS "table", count(*) AS rows, round(avg(c)::numeric, 4) AS ctr, round(avg(b)::numeric, 4) AS buy_rate
FROM (SELECT 'synth_train' t, :click c, :buy b FROM synth_train UNION ALL SELECT 'synth_valid', :click, :buy FROM synth_valid
      UNION ALL SELECT 'synth_test', :click, :buy FROM synth_test) x GROUP BY t ORDER BY t;
SELECT domain, count(*) AS rows, round(avg(:click)::numeric, 4) AS ctr, round(avg(:buy)::numeric, 4) AS buy_rate
FROM synth_train GROUP BY domain ORDER BY domain;
