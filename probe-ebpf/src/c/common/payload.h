/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * max_payload_bytes: how many bytes a program set copies out of a traced
 * process per read (the `maxPayloadBytes` knob). The socket-level set copies
 * that much of each read or write; the Go set that much of each string of a
 * request (less where the event's field is smaller).
 */
#ifndef FT_COMMON_PAYLOAD_H
#define FT_COMMON_PAYLOAD_H

#include "common/types.h"
#include "common/sizes.h"

volatile const __u32 max_payload_bytes = FT_DEFAULT_MAX_PAYLOAD_BYTES;

#endif
