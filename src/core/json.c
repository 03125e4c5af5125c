/*
 * json.c
 *		Errors and a small strict JSON parser for the core (configurations
 *		and safetensors headers).  Allocation is alloc.c's.
 */
#include "pncore.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PN_JSON_MAX_DEPTH 32
#define PN_JSON_MAX_NODES 1000000	/* bounds memory: about 100 bytes a node */

/*
 * Bytes of the first maxchars characters of UTF-8 text s (stopping at its
 * end): messages cut quoted strings with "%.*s" on character boundaries.
 */
int
pn_utf8_prefix(const char *s, int maxchars)
{
	int			n = 0;

	for (; s[n]; n++)
		if (((unsigned char) s[n] & 0xC0) != 0x80 && maxchars-- == 0)
			break;
	return n;
}

/* A message cut by the buffer's size ends on a UTF-8 character boundary */
static void
trim_partial_utf8(char *buf, int written, size_t size)
{
	size_t		n,
				lead;

	if (written < 0 || (size_t) written < size)
		return;
	n = strlen(buf);
	lead = n;
	while (lead > 0 && n - lead < 4 && ((unsigned char) buf[lead - 1] & 0xC0) == 0x80)
		lead--;
	if (lead > 0 && ((unsigned char) buf[lead - 1] & 0x80))
	{
		unsigned char c = (unsigned char) buf[lead - 1];
		size_t		need = (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : 4;

		/* the last character is incomplete: drop it */
		if (n - (lead - 1) < need)
			buf[lead - 1] = '\0';
	}
}

/* Record an error; returns code so callers can write return pn_seterr(...) */
int
pn_seterr(PnError *err, int code, const char *fmt,...)
{
	va_list		ap;

	if (err == NULL)
		return code;
	err->code = code;
	err->detail[0] = '\0';
	err->row = -1;
	va_start(ap, fmt);
	trim_partial_utf8(err->msg, vsnprintf(err->msg, sizeof(err->msg), fmt, ap), sizeof(err->msg));
	va_end(ap);
	return code;
}

/* Attach a detail line to the last error */
void
pn_setdetail(PnError *err, const char *fmt,...)
{
	va_list		ap;

	if (err == NULL)
		return;
	va_start(ap, fmt);
	trim_partial_utf8(err->detail, vsnprintf(err->detail, sizeof(err->detail), fmt, ap), sizeof(err->detail));
	va_end(ap);
}

typedef struct JsonParser
{
	const char *s;
	size_t		len;
	size_t		pos;
	PnError    *err;
	long		nodes;
} JsonParser;

static int	json_value(JsonParser *p, PnJson **out, int depth);

/* Skip JSON white space */
static void
json_ws(JsonParser *p)
{
	while (p->pos < p->len && (p->s[p->pos] == ' ' || p->s[p->pos] == '\t' ||
							   p->s[p->pos] == '\n' || p->s[p->pos] == '\r'))
		p->pos++;
}

/* Error at the current position */
static int
json_fail(JsonParser *p, const char *what)
{
	return pn_seterr(p->err, PN_EFORMAT, "invalid JSON: %s at byte %zu", what, p->pos);
}

/* Free a parsed tree */
void
pn_json_free(PnJson *j)
{
	int			i;

	if (j == NULL)
		return;
	for (i = 0; i < j->n; i++)
		pn_json_free(j->items[i]);
	pn_free(j->items);
	pn_free(j->str);
	pn_free(j->key);
	pn_free(j);
}

/* Append one hex digit value, -1 if not hex */
static int
hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Parse a string literal into a NUL-terminated UTF-8 buffer */
static int
json_string(JsonParser *p, char **out)
{
	size_t		start,
				cap,
				n = 0;
	char	   *buf;

	if (p->pos >= p->len || p->s[p->pos] != '"')
		return json_fail(p, "expected string");
	p->pos++;
	start = p->pos;
	/* output is never longer than the input */
	while (p->pos < p->len && p->s[p->pos] != '"')
		p->pos += (p->s[p->pos] == '\\') ? 2 : 1;
	if (p->pos >= p->len)
		return json_fail(p, "unterminated string");
	cap = p->pos - start + 1;
	buf = pn_alloc(cap);
	if (!buf)
		return pn_seterr(p->err, PN_ENOMEM, "out of memory parsing JSON");
	p->pos = start;
	while (p->s[p->pos] != '"')
	{
		unsigned char c = (unsigned char) p->s[p->pos++];

		if (c < 0x20)
		{
			pn_free(buf);
			return json_fail(p, "control character in string");
		}
		if (c != '\\')
		{
			buf[n++] = (char) c;
			continue;
		}
		c = (unsigned char) p->s[p->pos++];
		switch (c)
		{
			case '"':
			case '\\':
			case '/':
				buf[n++] = (char) c;
				break;
			case 'b':
				buf[n++] = '\b';
				break;
			case 'f':
				buf[n++] = '\f';
				break;
			case 'n':
				buf[n++] = '\n';
				break;
			case 'r':
				buf[n++] = '\r';
				break;
			case 't':
				buf[n++] = '\t';
				break;
			case 'u':
				{
					unsigned	cp = 0;
					int			i;

					if (p->pos + 4 > p->len)
					{
						pn_free(buf);
						return json_fail(p, "short \\u escape");
					}
					for (i = 0; i < 4; i++)
					{
						int			h = hexval(p->s[p->pos + i]);

						if (h < 0)
						{
							pn_free(buf);
							return json_fail(p, "bad \\u escape");
						}
						cp = cp * 16 + h;
					}
					p->pos += 4;
					/* names are ASCII in practice; keep BMP code points as UTF-8 */
					if (cp == 0)
					{
						pn_free(buf);
						return json_fail(p, "NUL in string");
					}
					if (cp < 0x80)
						buf[n++] = (char) cp;
					else if (cp < 0x800 && n + 2 < cap)
					{
						buf[n++] = (char) (0xC0 | (cp >> 6));
						buf[n++] = (char) (0x80 | (cp & 0x3F));
					}
					else if (n + 3 < cap)
					{
						buf[n++] = (char) (0xE0 | (cp >> 12));
						buf[n++] = (char) (0x80 | ((cp >> 6) & 0x3F));
						buf[n++] = (char) (0x80 | (cp & 0x3F));
					}
					else
						buf[n++] = '?';
					break;
				}
			default:
				pn_free(buf);
				return json_fail(p, "bad escape");
		}
	}
	p->pos++;					/* closing quote */
	buf[n] = '\0';
	*out = buf;
	return PN_OK;
}

/* Parse a number; integers keep exact int64 values */
static int
json_number(JsonParser *p, PnJson *j)
{
	size_t		start = p->pos;
	bool		integral = true;
	char		tmp[512];
	size_t		n;
	char	   *end;

	if (p->pos < p->len && p->s[p->pos] == '-')
		p->pos++;
	if (p->pos >= p->len || p->s[p->pos] < '0' || p->s[p->pos] > '9')
		return json_fail(p, "bad number");
	while (p->pos < p->len && p->s[p->pos] >= '0' && p->s[p->pos] <= '9')
		p->pos++;
	if (p->pos < p->len && p->s[p->pos] == '.')
	{
		integral = false;
		p->pos++;
		if (p->pos >= p->len || p->s[p->pos] < '0' || p->s[p->pos] > '9')
			return json_fail(p, "bad number");
		while (p->pos < p->len && p->s[p->pos] >= '0' && p->s[p->pos] <= '9')
			p->pos++;
	}
	if (p->pos < p->len && (p->s[p->pos] == 'e' || p->s[p->pos] == 'E'))
	{
		integral = false;
		p->pos++;
		if (p->pos < p->len && (p->s[p->pos] == '+' || p->s[p->pos] == '-'))
			p->pos++;
		if (p->pos >= p->len || p->s[p->pos] < '0' || p->s[p->pos] > '9')
			return json_fail(p, "bad number");
		while (p->pos < p->len && p->s[p->pos] >= '0' && p->s[p->pos] <= '9')
			p->pos++;
	}
	n = p->pos - start;
	if (n >= sizeof(tmp))
		return json_fail(p, "number too long");
	memcpy(tmp, p->s + start, n);
	tmp[n] = '\0';
	j->type = PNJ_NUMBER;
	errno = 0;
	j->num = strtod(tmp, &end);
	if (!isfinite(j->num))
		return json_fail(p, "number out of range");
	if (integral)
	{
		errno = 0;
		j->ival = strtoll(tmp, &end, 10);
		j->is_int = (errno == 0);
	}
	return PN_OK;
}

/* Add a child, growing the array */
static int
json_push(JsonParser *p, PnJson *parent, PnJson *child, int *cap)
{
	if (parent->n == *cap)
	{
		int			ncap = *cap ? *cap * 2 : 8;
		PnJson	  **items = pn_alloc(sizeof(PnJson *) * ncap);

		if (!items)
			return pn_seterr(p->err, PN_ENOMEM, "out of memory parsing JSON");
		if (parent->n)
			memcpy(items, parent->items, sizeof(PnJson *) * parent->n);
		pn_free(parent->items);
		parent->items = items;
		*cap = ncap;
	}
	parent->items[parent->n++] = child;
	return PN_OK;
}

/* qsort comparator of members by key */
static int
member_cmp(const void *a, const void *b)
{
	return strcmp((*(PnJson *const *) a)->key, (*(PnJson *const *) b)->key);
}

/* Refuse duplicate keys: sort a copy of the members, O(n log n) */
static int
json_unique_keys(JsonParser *p, PnJson *obj)
{
	PnJson	  **sorted;
	int			i,
				rc = PN_OK;

	if (obj->n < 2)
		return PN_OK;
	sorted = pn_alloc(sizeof(PnJson *) * obj->n);
	if (!sorted)
		return pn_seterr(p->err, PN_ENOMEM, "out of memory parsing JSON");
	memcpy(sorted, obj->items, sizeof(PnJson *) * obj->n);
	qsort(sorted, obj->n, sizeof(PnJson *), member_cmp);
	for (i = 1; i < obj->n; i++)
		if (strcmp(sorted[i - 1]->key, sorted[i]->key) == 0)
		{
			rc = pn_seterr(p->err, PN_EFORMAT, "invalid JSON: duplicate key \"%.*s\"", pn_utf8_prefix(sorted[i]->key, 60), sorted[i]->key);
			break;
		}
	pn_free(sorted);
	return rc;
}

/* Match a literal keyword */
static bool
json_lit(JsonParser *p, const char *lit)
{
	size_t		n = strlen(lit);

	if (p->len - p->pos >= n && memcmp(p->s + p->pos, lit, n) == 0)
	{
		p->pos += n;
		return true;
	}
	return false;
}

/* Parse any value */
static int
json_value(JsonParser *p, PnJson **out, int depth)
{
	PnJson	   *j;
	int			rc = PN_OK;
	int			cap = 0;

	if (depth > PN_JSON_MAX_DEPTH)
		return json_fail(p, "nesting too deep");
	json_ws(p);
	if (p->pos >= p->len)
		return json_fail(p, "unexpected end");
	if (++p->nodes > PN_JSON_MAX_NODES)
		return json_fail(p, "too many values");
	j = pn_alloc0(sizeof(PnJson));
	if (!j)
		return pn_seterr(p->err, PN_ENOMEM, "out of memory parsing JSON");
	switch (p->s[p->pos])
	{
		case '{':
			j->type = PNJ_OBJECT;
			p->pos++;
			json_ws(p);
			if (p->pos < p->len && p->s[p->pos] == '}')
			{
				p->pos++;
				break;
			}
			for (;;)
			{
				char	   *key = NULL;
				PnJson	   *child = NULL;

				json_ws(p);
				if ((rc = json_string(p, &key)) != PN_OK)
					break;
				json_ws(p);
				if (p->pos >= p->len || p->s[p->pos] != ':')
				{
					pn_free(key);
					rc = json_fail(p, "expected ':'");
					break;
				}
				p->pos++;
				if ((rc = json_value(p, &child, depth + 1)) != PN_OK)
				{
					pn_free(key);
					break;
				}
				child->key = key;
				if ((rc = json_push(p, j, child, &cap)) != PN_OK)
				{
					pn_json_free(child);
					break;
				}
				json_ws(p);
				if (p->pos < p->len && p->s[p->pos] == ',')
				{
					p->pos++;
					continue;
				}
				if (p->pos < p->len && p->s[p->pos] == '}')
				{
					p->pos++;
					rc = json_unique_keys(p, j);
					break;
				}
				rc = json_fail(p, "expected ',' or '}'");
				break;
			}
			break;
		case '[':
			j->type = PNJ_ARRAY;
			p->pos++;
			json_ws(p);
			if (p->pos < p->len && p->s[p->pos] == ']')
			{
				p->pos++;
				break;
			}
			for (;;)
			{
				PnJson	   *child = NULL;

				if ((rc = json_value(p, &child, depth + 1)) != PN_OK)
					break;
				if ((rc = json_push(p, j, child, &cap)) != PN_OK)
				{
					pn_json_free(child);
					break;
				}
				json_ws(p);
				if (p->pos < p->len && p->s[p->pos] == ',')
				{
					p->pos++;
					continue;
				}
				if (p->pos < p->len && p->s[p->pos] == ']')
				{
					p->pos++;
					break;
				}
				rc = json_fail(p, "expected ',' or ']'");
				break;
			}
			break;
		case '"':
			j->type = PNJ_STRING;
			rc = json_string(p, &j->str);
			break;
		case 't':
			j->type = PNJ_BOOL;
			j->boolean = true;
			if (!json_lit(p, "true"))
				rc = json_fail(p, "bad literal");
			break;
		case 'f':
			j->type = PNJ_BOOL;
			if (!json_lit(p, "false"))
				rc = json_fail(p, "bad literal");
			break;
		case 'n':
			j->type = PNJ_NULL;
			if (!json_lit(p, "null"))
				rc = json_fail(p, "bad literal");
			break;
		default:
			rc = json_number(p, j);
			break;
	}
	if (rc != PN_OK)
	{
		pn_json_free(j);
		return rc;
	}
	*out = j;
	return PN_OK;
}

/* Parse a complete JSON text (nothing but white space may follow) */
int
pn_json_parse(const char *text, size_t len, PnJson **out, PnError *err)
{
	JsonParser	p = {text, len, 0, err, 0};
	PnJson	   *j = NULL;
	int			rc;

	*out = NULL;
	rc = json_value(&p, &j, 0);
	if (rc != PN_OK)
		return rc;
	json_ws(&p);
	if (p.pos != p.len)
	{
		pn_json_free(j);
		return json_fail(&p, "trailing characters");
	}
	*out = j;
	return PN_OK;
}

/* Member of an object by key, or NULL */
const PnJson *
pn_json_get(const PnJson *obj, const char *key)
{
	int			i;

	if (obj == NULL || obj->type != PNJ_OBJECT)
		return NULL;
	for (i = 0; i < obj->n; i++)
		if (strcmp(obj->items[i]->key, key) == 0)
			return obj->items[i];
	return NULL;
}
