/* pepnet--0.1.0--0.2.0.sql: upgrade from 0.1.0 to 0.2.0.
 *
 * There is no pepnet--0.2.0.sql: CREATE EXTENSION pepnet runs pepnet--0.1.0.sql as shipped and
 * then this script (as contrib modules do), so a fresh 0.2.0 database and an upgraded one are
 * built by the same statements.  Every C symbol that pepnet--0.1.0.sql names must stay exported
 * by the library (CREATE FUNCTION checks it), even where this script replaces the function.
 *
 * Sections by topic; each keeps to its own objects.
 */

\echo Use "ALTER EXTENSION pepnet UPDATE TO '0.2.0'" to load this file. \quit

-- == registry: models, versions, deployments ==

-- == training and calibration ==

-- == scoring ==

-- == scaling out ==
