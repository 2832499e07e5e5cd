// Output files of a command, all or nothing. Every path is checked before any compute (its
// folder created if missing and writable, the file itself not a folder nor read-only), every
// file is written under a temporary name beside its final one, and all of them are renamed
// into place only when every write and close succeeded; a command that fails leaves the
// folders as they were (folders it created are removed again while still empty).
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace burst::cli {

class Outputs {
 public:
  // `owner`: this process writes the files (rank 0 of an MPI job) and so cleans up after a
  // failure; other ranks only check the paths, and never remove what the owner may be
  // writing into.
  explicit Outputs(bool owner = true) : owner_(owner) {}
  Outputs(const Outputs&) = delete;
  Outputs& operator=(const Outputs&) = delete;
  // Removes staged files that were not committed, and folders this object created.
  ~Outputs();

  // Checks now that `path` can be written (creating its folder); `flag` names it in errors.
  // Throws burst::Error.
  void expect_file(std::string_view flag, const std::string& path);
  // Checks now that folder `dir` can hold the files `names` (creating it). Files whose names
  // are known only later (charts) may be written into it too.
  void expect_dir(std::string_view flag, const std::string& dir, const std::vector<std::string>& names);

  // Calls writer(temporary) to write `path` (checked by expect_* before) under a temporary
  // name; the file is moved to `path` by commit(). An OutputError from the writer is
  // rethrown naming `path` instead of the temporary name.
  void write(const std::string& path, const std::function<void(const std::string& temporary)>& writer);
  // Writes `text` as the file `path`; throws burst::OutputError naming the file and the
  // system's reason when a write or the close fails.
  void write_text(const std::string& path, std::string_view text);

  // Renames every staged file into place, in the order staged.
  void commit();

 private:
  struct Staged {
    std::string temporary, final_path;
  };
  void create_folder(std::string_view flag, const std::string& dir);
  void check_file(std::string_view flag, const std::string& path);
  std::string stage(const std::string& path);

  std::vector<std::string> expected_;       // paths checked by expect_*
  std::vector<std::string> expected_dirs_;  // folders checked by expect_dir
  std::vector<std::string> created_dirs_;   // folders created here, outermost first
  std::vector<Staged> staged_;
  bool owner_;
  bool committed_ = false;
};

}  // namespace burst::cli
