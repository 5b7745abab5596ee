/* Umbrella header: plugins include only this. */
#pragma once

#include <dfq/dfq-macros.h>
#include <dfq/dfq-version.h>
#include <dfq/dfq-error.h>
#include <dfq/dfq-arena.h>
#include <dfq/dfq-tensor.h>
#include <dfq/dfq-rand.h>
#include <dfq/dfq-ops.h>
#include <dfq/dfq-custom-op.h>
#include <dfq/dfq-gradcheck.h>
#include <dfq/dfq-graph.h>
#include <dfq/dfq-optim.h>
#include <dfq/dfq-safetensors.h>
#include <dfq/dfq-dataset.h>
#include <dfq/dfq-params.h>
#include <dfq/dfq-plugin.h>
#include <dfq/dfq-registry.h>
#include <dfq/dfq-optim-params.h>
#include <dfq/dfq-pipeline.h>
#include <dfq/dfq-model.h>
#include <dfq/dfq-evaluate.h>
#include <dfq/dfq-step.h>
#include <dfq/dfq-loss.h>
#include <dfq/dfq-quantizer.h>
#include <dfq/dfq-synthesizer.h>
#include <dfq/dfq-runner.h>
