// Calibration files of `burst plan --calibrate` (the measuring is the library's,
// burst/plan.h): written as one flat JSON object by the command line's JSON writer, read back
// by --cluster this.
#pragma once

#include <ostream>
#include <string>

#include "burst/plan.h"

namespace burst::cli {

// The calibration as the JSON text load_calibration reads.
std::string calibration_json(const plan::Calibration& c);
// The calibration's figures, a line each, as burst plan --calibrate prints them.
void print_calibration(std::ostream& os, const plan::Calibration& c);
// Writes calibration_json(c) to `path` (all or nothing, output.h).
void save_calibration(const std::string& path, const plan::Calibration& c);
// Throws burst::Error naming `what` when the file is missing or malformed.
plan::Calibration load_calibration(const std::string& path, const std::string& what);

}  // namespace burst::cli
