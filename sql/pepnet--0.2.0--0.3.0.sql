/*
 * pepnet--0.2.0--0.3.0.sql: ALTER EXTENSION pepnet UPDATE from 0.2.0 to 0.3.0.
 *
 * Also the tail of CREATE EXTENSION's 0.3.0 script (sql/pepnet--0.3.0.sql is the preamble, the
 * 0.1.0 script and both upgrades), so a fresh 0.3.0 database and an upgraded one are the same.
 * Stored versions keep their weights, configs and scores bit for bit.
 */

\echo Use "ALTER EXTENSION pepnet UPDATE TO '0.3.0'" to load this file. \quit
