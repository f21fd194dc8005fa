// SPDX-License-Identifier: GPL-2.0
/*
 * sramlink: the shared region of a Xen dom0less guest as a character device in dom0.
 *
 * The region (an `mmio-sram` node the host device tree declares over a /reserved-memory
 * carve-out) is served as /dev/sramlink0, /dev/sramlink1, ...: mmap of the device maps that
 * range and nothing else, uncached (Device-nGnRnE, as /dev/mem with O_SYNC) unless the node
 * carries `sramlink,cacheable`. The peer then needs neither root nor `iomem=relaxed`, and it
 * still works when lockdown closes /dev/mem; whoever may open the node may use the region.
 *
 * Which regions (the first rule that applies):
 *   1. module parameters: path=/sram@7f000000[,...] (node paths or /aliases names), or
 *      base=0x7f000000[,...] size=0x1000000[,...], each equal to the reg of an `mmio-sram`
 *      node or of a /reserved-memory child;
 *   2. /chosen/sramlink,region = "/path" (a list of strings for several regions), the same
 *      property the guest reads;
 *   3. the only enabled `mmio-sram` node, when there is exactly one (as the guest and the peer
 *      do). Several (SoCs have on-chip SRAM nodes too) are refused, listed, with how to choose.
 * Every range must be page-aligned and must not overlap System RAM.
 *
 * The in-kernel sram driver binds the same node and claims the range; this module does not
 * request_mem_region it, so both coexist. Base, size and cacheability are exported through
 * sysfs (/sys/class/misc/sramlinkN/) and the SRAMLINK_IOC_REGION_INFO ioctl (sramlink.h).
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/fs.h>
#include <linux/ioport.h>
#include <linux/kernel.h>
#include <linux/miscdevice.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/of.h>
#include <linux/of_address.h>
#include <linux/slab.h>
#include <linux/uaccess.h>

#include "sramlink.h"

#define SRAMLINK_MAX_REGIONS 8

static char *path[SRAMLINK_MAX_REGIONS];
static int path_count;
module_param_array(path, charp, &path_count, 0444);
MODULE_PARM_DESC(path, "Device-tree paths (or /aliases names) of the regions to serve");

static unsigned long long base[SRAMLINK_MAX_REGIONS];
static int base_count;
module_param_array(base, ullong, &base_count, 0444);
MODULE_PARM_DESC(base, "Physical base of each region (with size=; must equal a node's reg)");

static unsigned long long size[SRAMLINK_MAX_REGIONS];
static int size_count;
module_param_array(size, ullong, &size_count, 0444);
MODULE_PARM_DESC(size, "Size in bytes of each region (with base=)");

/* One served region and its device. */
struct sramlink_region {
	struct miscdevice misc;
	char name[16];		/* "sramlinkN", the device's name (misc keeps the pointer) */
	phys_addr_t base;
	resource_size_t size;
	bool cacheable;
	struct device_node *node;	/* the node the range was checked against (a reference) */
};

static struct sramlink_region *regions[SRAMLINK_MAX_REGIONS];
static unsigned int region_count;

static struct sramlink_region *file_region(struct file *file)
{
	/* misc_open leaves the miscdevice in private_data. */
	return container_of(file->private_data, struct sramlink_region, misc);
}

static int sramlink_mmap(struct file *file, struct vm_area_struct *vma)
{
	struct sramlink_region *region = file_region(file);
	unsigned long pages = region->size >> PAGE_SHIFT;
	unsigned long first = vma->vm_pgoff;
	unsigned long length = vma->vm_end - vma->vm_start;

	/* A private (copy-on-write) mapping of shared memory makes no sense. */
	if (!(vma->vm_flags & VM_SHARED))
		return -EINVAL;
	/* Only pages of the region: offset and length both inside it (no overflow: pages). */
	if (first >= pages || (length >> PAGE_SHIFT) > pages - first)
		return -EINVAL;
	if (!region->cacheable)
		vma->vm_page_prot = pgprot_noncached(vma->vm_page_prot);
	/* Sets VM_IO | VM_PFNMAP | VM_DONTEXPAND | VM_DONTDUMP: mremap cannot grow it. */
	return io_remap_pfn_range(vma, vma->vm_start, PHYS_PFN(region->base) + first, length,
				  vma->vm_page_prot);
}

static long sramlink_ioctl(struct file *file, unsigned int command, unsigned long argument)
{
	struct sramlink_region *region = file_region(file);
	struct sramlink_region_info info = {
		.base = region->base,
		.size = region->size,
		.flags = region->cacheable ? SRAMLINK_REGION_CACHEABLE : 0,
		.version = SRAMLINK_INFO_VERSION,
	};

	if (command != SRAMLINK_IOC_REGION_INFO)
		return -ENOTTY;
	if (copy_to_user((void __user *)argument, &info, sizeof(info)))
		return -EFAULT;
	return 0;
}

static const struct file_operations sramlink_fops = {
	.owner = THIS_MODULE,
	.mmap = sramlink_mmap,
	.unlocked_ioctl = sramlink_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.llseek = noop_llseek,
};

static struct sramlink_region *device_region(struct device *dev)
{
	/* misc_register stores the miscdevice as the class device's driver data. */
	struct miscdevice *misc = dev_get_drvdata(dev);

	return container_of(misc, struct sramlink_region, misc);
}

static ssize_t base_show(struct device *dev, struct device_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "0x%llx\n", (unsigned long long)device_region(dev)->base);
}
static DEVICE_ATTR_RO(base);

static ssize_t size_show(struct device *dev, struct device_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "0x%llx\n", (unsigned long long)device_region(dev)->size);
}
static DEVICE_ATTR_RO(size);

static ssize_t cacheable_show(struct device *dev, struct device_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "%d\n", device_region(dev)->cacheable);
}
static DEVICE_ATTR_RO(cacheable);

static ssize_t of_node_show(struct device *dev, struct device_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "%pOF\n", device_region(dev)->node);
}
static DEVICE_ATTR_RO(of_node);

static struct attribute *sramlink_attrs[] = {
	&dev_attr_base.attr,
	&dev_attr_size.attr,
	&dev_attr_cacheable.attr,
	&dev_attr_of_node.attr,
	NULL,
};
ATTRIBUTE_GROUPS(sramlink);

/* Whether `node` is a child of the root's /reserved-memory node. */
static bool is_reserved_memory_child(struct device_node *node)
{
	struct device_node *parent = of_get_parent(node);
	bool reserved = parent && of_node_name_eq(parent, "reserved-memory") &&
			parent->parent && !parent->parent->parent;

	of_node_put(parent);
	return reserved;
}

/*
 * Checks the range and registers /dev/sramlinkN for it. Takes over the reference on `node`
 * (dropped on failure). `how` says how the region was selected, for the log.
 */
static int add_region(struct device_node *node, phys_addr_t start, resource_size_t length,
		      const char *how)
{
	struct sramlink_region *region;
	unsigned int i;
	int error;

	if (region_count == SRAMLINK_MAX_REGIONS) {
		pr_err("%pOF: more than %d regions\n", node, SRAMLINK_MAX_REGIONS);
		error = -E2BIG;
		goto put_node;
	}
	if (region_intersects(start, length, IORESOURCE_SYSTEM_RAM, IORES_DESC_NONE) !=
	    REGION_DISJOINT) {
		pr_err("refusing %pOF at 0x%llx+0x%llx: the range overlaps System RAM (see /proc/iomem); the shared region must be carved out of RAM (a /reserved-memory no-map node)\n",
		       node, (unsigned long long)start, (unsigned long long)length);
		error = -EINVAL;
		goto put_node;
	}
	if (!PAGE_ALIGNED(start) || !PAGE_ALIGNED(length) || length == 0) {
		pr_err("refusing %pOF at 0x%llx+0x%llx: base and size must be non-zero multiples of the page size (0x%lx)\n",
		       node, (unsigned long long)start, (unsigned long long)length, PAGE_SIZE);
		error = -EINVAL;
		goto put_node;
	}
	for (i = 0; i < region_count; i++) {
		if (start < regions[i]->base + regions[i]->size && regions[i]->base < start + length) {
			pr_err("refusing %pOF at 0x%llx+0x%llx: it overlaps %s\n", node,
			       (unsigned long long)start, (unsigned long long)length, regions[i]->name);
			error = -EINVAL;
			goto put_node;
		}
	}

	region = kzalloc(sizeof(*region), GFP_KERNEL);
	if (!region) {
		error = -ENOMEM;
		goto put_node;
	}
	region->base = start;
	region->size = length;
	region->cacheable = of_property_read_bool(node, "sramlink,cacheable");
	region->node = node;
	snprintf(region->name, sizeof(region->name), "sramlink%u", region_count);
	region->misc.minor = MISC_DYNAMIC_MINOR;
	region->misc.name = region->name;
	region->misc.fops = &sramlink_fops;
	region->misc.groups = sramlink_groups;
	/* root only until someone grants access (chgrp/chmod, or a udev rule). */
	region->misc.mode = 0600;
	error = misc_register(&region->misc);
	if (error) {
		pr_err("%s: cannot register the device for %pOF: %d\n", region->name, node, error);
		kfree(region);
		goto put_node;
	}
	regions[region_count++] = region;
	pr_info("/dev/%s: %pOF 0x%llx+0x%llx, %s (%s)\n", region->name, node,
		(unsigned long long)start, (unsigned long long)length,
		region->cacheable ? "cacheable" : "uncached", how);
	return 0;

put_node:
	of_node_put(node);
	return error;
}

/*
 * A selected node: an enabled mmio-sram node or a /reserved-memory child, served with its first
 * reg entry. Takes over the reference on `node`; `what` names the selection for messages.
 */
static int add_selected_node(struct device_node *node, const char *how, const char *what)
{
	struct resource resource;
	int error;

	if (!of_device_is_compatible(node, "mmio-sram") && !is_reserved_memory_child(node)) {
		pr_err("%s \"%s\": %pOF is neither an mmio-sram node nor a /reserved-memory entry\n",
		       how, what, node);
		of_node_put(node);
		return -EINVAL;
	}
	if (!of_device_is_available(node)) {
		pr_err("%s \"%s\": %pOF is disabled (status), the range is not this domain's\n",
		       how, what, node);
		of_node_put(node);
		return -ENODEV;
	}
	error = of_address_to_resource(node, 0, &resource);
	if (error) {
		pr_err("%s \"%s\": %pOF has no usable reg: %d\n", how, what, node, error);
		of_node_put(node);
		return error;
	}
	return add_region(node, resource.start, resource_size(&resource), how);
}

/* A node chosen by path or alias. */
static int add_node_by_path(const char *node_path, const char *how)
{
	struct device_node *node = of_find_node_by_path(node_path);

	if (!node) {
		pr_err("%s \"%s\": no such device-tree node or alias\n", how, node_path);
		return -ENODEV;
	}
	return add_selected_node(node, how, node_path);
}

/* Whether `node`'s first reg entry is exactly start+length. */
static bool reg_equals(struct device_node *node, phys_addr_t start, resource_size_t length)
{
	struct resource resource;

	return !of_address_to_resource(node, 0, &resource) && resource.start == start &&
	       resource_size(&resource) == length;
}

/* A range given as base=/size=: must overlap no RAM and equal a node's reg. */
static int add_param_range(unsigned long long start, unsigned long long length)
{
	struct device_node *node;
	struct device_node *reserved;

	if (start > (phys_addr_t)~0 || length == 0 || start + length < start) {
		pr_err("refusing base=0x%llx size=0x%llx: not a valid physical range\n", start, length);
		return -EINVAL;
	}
	/* Checked first, so that a range in RAM is named as such. */
	if (region_intersects(start, length, IORESOURCE_SYSTEM_RAM, IORES_DESC_NONE) !=
	    REGION_DISJOINT) {
		pr_err("refusing base=0x%llx size=0x%llx: the range overlaps System RAM (see /proc/iomem); the shared region must be carved out of RAM (a /reserved-memory no-map node)\n",
		       start, length);
		return -EINVAL;
	}
	for_each_compatible_node(node, NULL, "mmio-sram") {
		if (of_device_is_available(node) && reg_equals(node, start, length))
			return add_region(node, start, length, "module parameters base=/size=");
	}
	reserved = of_find_node_by_path("/reserved-memory");
	if (reserved) {
		for_each_available_child_of_node(reserved, node) {
			if (reg_equals(node, start, length)) {
				of_node_put(reserved);
				return add_region(node, start, length,
						  "module parameters base=/size=");
			}
		}
		of_node_put(reserved);
	}
	pr_err("refusing base=0x%llx size=0x%llx: it equals the reg of no enabled mmio-sram node and no /reserved-memory entry of the device tree\n",
	       start, length);
	return -EINVAL;
}

/* Rule 3: the only enabled mmio-sram node; several are listed and refused. */
static int add_only_sram_node(void)
{
	struct device_node *node;
	struct device_node *only = NULL;
	unsigned int count = 0;

	for_each_compatible_node(node, NULL, "mmio-sram") {
		if (!of_device_is_available(node))
			continue;
		count++;
		if (!only)
			only = of_node_get(node);
	}
	if (count == 0) {
		pr_err("no enabled mmio-sram node in the device tree, and neither path= nor base=/size= was given\n");
		return -ENODEV;
	}
	if (count > 1) {
		for_each_compatible_node(node, NULL, "mmio-sram")
			if (of_device_is_available(node))
				pr_err("candidate: %pOF\n", node);
		pr_err("%u enabled mmio-sram nodes (listed above), cannot choose: set /chosen/sramlink,region = \"/path\" in the device tree, or load with path=/path\n",
		       count);
		of_node_put(only);
		return -EINVAL;
	}
	return add_selected_node(only, "the only enabled mmio-sram node", "mmio-sram");
}

static void remove_regions(void)
{
	while (region_count > 0) {
		struct sramlink_region *region = regions[--region_count];

		misc_deregister(&region->misc);
		of_node_put(region->node);
		kfree(region);
	}
}

static int add_regions(void)
{
	struct device_node *chosen;
	const char *chosen_path;
	int count;
	int error;
	int i;

	if (path_count && base_count) {
		pr_err("give either path= or base=/size=, not both\n");
		return -EINVAL;
	}
	if (base_count != size_count) {
		pr_err("base= has %d values but size= has %d\n", base_count, size_count);
		return -EINVAL;
	}
	for (i = 0; i < path_count; i++) {
		error = add_node_by_path(path[i], "module parameter path=");
		if (error)
			return error;
	}
	for (i = 0; i < base_count; i++) {
		error = add_param_range(base[i], size[i]);
		if (error)
			return error;
	}
	if (path_count || base_count)
		return 0;

	chosen = of_find_node_by_path("/chosen");
	count = chosen ? of_property_count_strings(chosen, "sramlink,region") : -EINVAL;
	for (i = 0; i < count; i++) {
		error = of_property_read_string_index(chosen, "sramlink,region", i, &chosen_path);
		if (!error)
			error = add_node_by_path(chosen_path, "/chosen/sramlink,region");
		if (error) {
			of_node_put(chosen);
			return error;
		}
	}
	of_node_put(chosen);
	if (count > 0)
		return 0;
	return add_only_sram_node();
}

static int __init sramlink_init(void)
{
	int error = add_regions();

	if (error)
		remove_regions();
	return error;
}

static void __exit sramlink_exit(void)
{
	remove_regions();
}

module_init(sramlink_init);
module_exit(sramlink_exit);

MODULE_DESCRIPTION("sramlink: a Xen dom0less guest's shared region as /dev/sramlinkN");
MODULE_LICENSE("GPL");
