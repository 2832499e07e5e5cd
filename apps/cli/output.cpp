#include "output.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "burst/error.h"

namespace burst::cli {
namespace fs = std::filesystem;

namespace {

std::string errno_text(int err) { return std::strerror(err); }

// The folder a file path lives in ("." for a bare name).
fs::path folder_of(const std::string& path) {
  const fs::path parent = fs::path(path).parent_path();
  return parent.empty() ? fs::path(".") : parent;
}

// access(2) answers for the real user, so it is the check an ordinary user needs; root may
// write anywhere, and a full disk is caught when the write itself fails.
void check_writable(std::string_view flag, const fs::path& p, std::string_view what) {
  if (::access(p.c_str(), W_OK) != 0) {
    fail(flag, ": expected a writable ", what, ", got '", p.string(), "' (", errno_text(errno), ")");
  }
}

void write_file(const std::string& path, std::string_view text) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw OutputError("cannot create '" + path + "': " + errno_text(errno));
  std::size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = n < 0 ? errno : EIO;
      ::close(fd);
      throw OutputError("writing '" + path + "' failed: " + errno_text(err));
    }
    done += static_cast<std::size_t>(n);
  }
  if (::close(fd) != 0) throw OutputError("writing '" + path + "' failed at close: " + errno_text(errno));
}

}  // namespace

Outputs::~Outputs() {
  std::error_code ec;
  if (!owner_) return;
  if (!committed_)
    for (const Staged& s : staged_) fs::remove(s.temporary, ec);
  if (committed_) return;
  // Innermost first; fs::remove deletes a folder only while it is empty.
  for (auto it = created_dirs_.rbegin(); it != created_dirs_.rend(); ++it) fs::remove(*it, ec);
}

void Outputs::create_folder(std::string_view flag, const std::string& dir) {
  std::error_code ec;
  // Remember which folders do not exist yet, so a failed command can remove them again.
  std::vector<fs::path> missing;
  for (fs::path p = fs::absolute(dir, ec); !p.empty() && !fs::exists(p, ec); p = p.parent_path()) {
    missing.push_back(p);
    if (p == p.parent_path()) break;
  }
  fs::create_directories(dir, ec);
  if (ec) fail(flag, ": expected a folder that exists or can be created, got '", dir, "' (", ec.message(), ")");
  for (auto it = missing.rbegin(); it != missing.rend(); ++it) created_dirs_.push_back(it->string());
  if (!fs::is_directory(dir, ec)) fail(flag, ": expected a folder, got '", dir, "' (not a folder)");
  check_writable(flag, dir, "folder");
}

void Outputs::check_file(std::string_view flag, const std::string& path) {
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (fs::exists(st)) {
    BURST_CHECK(!fs::is_directory(st), flag, ": expected a file, got the folder '", path, "'");
    check_writable(flag, path, "file");
  }
  expected_.push_back(path);
}

void Outputs::expect_file(std::string_view flag, const std::string& path) {
  BURST_CHECK(!path.empty(), flag, ": expected a file name, got ''");
  create_folder(flag, folder_of(path).string());
  check_file(flag, path);
}

void Outputs::expect_dir(std::string_view flag, const std::string& dir, const std::vector<std::string>& names) {
  BURST_CHECK(!dir.empty(), flag, ": expected a folder name, got ''");
  create_folder(flag, dir);
  expected_dirs_.push_back(fs::path(dir).lexically_normal().string());
  for (const std::string& name : names) check_file(flag, (fs::path(dir) / name).string());
}

std::string Outputs::stage(const std::string& path) {
  const std::string folder = folder_of(path).lexically_normal().string();
  BURST_CHECK(std::find(expected_.begin(), expected_.end(), path) != expected_.end() ||
                  std::find(expected_dirs_.begin(), expected_dirs_.end(), folder) != expected_dirs_.end(),
              "output '", path, "' was not checked before the run (internal error)");
  const fs::path p(path);
  // Hidden and beside the final file: the rename stays within one file system.
  std::string name = p.filename().string();  // built in steps: GCC 12 misreads "." + ... (-Wrestrict)
  name.insert(0, 1, '.');
  name.append(".tmp-").append(std::to_string(::getpid()));
  const std::string temporary = (p.parent_path() / name).string();
  staged_.push_back({temporary, path});
  return temporary;
}

void Outputs::write(const std::string& path, const std::function<void(const std::string&)>& writer) {
  const std::string temporary = stage(path);
  try {
    writer(temporary);
  } catch (const OutputError& e) {
    std::string message = e.what();
    for (auto at = message.find(temporary); at != std::string::npos; at = message.find(temporary, at + path.size()))
      message.replace(at, temporary.size(), path);
    throw OutputError(message);
  }
}

void Outputs::write_text(const std::string& path, std::string_view text) {
  write(path, [&](const std::string& temporary) { write_file(temporary, text); });
}

void Outputs::commit() {
  for (const Staged& s : staged_) {
    if (::rename(s.temporary.c_str(), s.final_path.c_str()) != 0) {
      throw OutputError("cannot move '" + s.temporary + "' to '" + s.final_path + "': " + errno_text(errno));
    }
  }
  committed_ = true;
}

}  // namespace burst::cli
