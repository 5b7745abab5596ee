/* PLACEHOLDER: being written. */
#pragma once
#include <glib.h>
#include <dfq/dfq-macros.h>
