/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * sramlink dom0 module: the user-space interface of /dev/sramlinkN.
 *
 * Besides mmap, the device answers one ioctl, SRAMLINK_IOC_REGION_INFO, which tells the
 * caller the physical base and size of the region the device serves and how it is mapped, so
 * user space never guesses them (a character device has no file length). The same values are
 * in sysfs: /sys/class/misc/sramlinkN/{base,size,cacheable,of_node}.
 */
#ifndef SRAMLINK_UAPI_H
#define SRAMLINK_UAPI_H

#include <linux/ioctl.h>
#include <linux/types.h>

/* The layout version of struct sramlink_region_info (its `version` field). */
#define SRAMLINK_INFO_VERSION 1

/* `flags`: mmap gives a cacheable (Normal write-back) mapping; otherwise Device-nGnRnE. */
#define SRAMLINK_REGION_CACHEABLE (1U << 0)

/* What SRAMLINK_IOC_REGION_INFO fills in: 24 bytes, no padding. */
struct sramlink_region_info {
	__u64 base;	/* physical address of the first byte */
	__u64 size;	/* bytes; mmap accepts offset + length <= size */
	__u32 flags;	/* SRAMLINK_REGION_* */
	__u32 version;	/* SRAMLINK_INFO_VERSION */
};

#define SRAMLINK_IOC_MAGIC 0xb5
/* = 0x8018b501 on arm64 and x86_64. */
#define SRAMLINK_IOC_REGION_INFO _IOR(SRAMLINK_IOC_MAGIC, 1, struct sramlink_region_info)

#endif /* SRAMLINK_UAPI_H */
