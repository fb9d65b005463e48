/*
 * rows.h: a chat row of a data file as training reads it, for the commands that show one
 * (chat-template): the "messages" of the row, or ShareGPT's "conversations" (+ "system"), with
 * the roles mapped as docs/data.md says (src/data/formats.c, map_roles), and its "tools" (a JSON
 * string is parsed, as TRL json.loads it).
 */
#ifndef FT_DATA_ROWS_H
#define FT_DATA_ROWS_H

#include "ftune.h"

#include <cjson/cJSON.h>

/* 1 if row is an object with "messages" or "conversations". */
int data_is_chat_row(const cJSON *row);
/* messages and tools (NULL when none) of a chat row; *owned holds what had to be built
 * (cJSON_Delete it; it may be NULL). Errors name where and the field. */
ft_status data_chat_row(const cJSON *row, const char *where, cJSON **owned, const cJSON **messages,
                        const cJSON **tools, ft_error *err);

#endif
