// SPDX-License-Identifier: LGPL-2.1-or-later
#include "io/mapped_file.h"

#include "error.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace flashvsr::io {

std::shared_ptr<MappedFile> MappedFile::map(const ReadOnlyFile& file) {
  if (file.size() == 0) return std::shared_ptr<MappedFile>(new MappedFile(nullptr, 0));
  void* p = ::mmap(nullptr, file.size(), PROT_READ | PROT_WRITE, MAP_PRIVATE, file.fd(), 0);
  if (p == MAP_FAILED)
    throw Error(Error::Kind::NotFound, "cannot map " + file.label() + " '" + file.path() + "' (" +
                                           std::to_string(file.size()) + " bytes): " + std::strerror(errno));
  return std::shared_ptr<MappedFile>(new MappedFile(static_cast<unsigned char*>(p), file.size()));
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(data_, size_);
}

void MappedFile::release(uint64_t offset, uint64_t n) const {
  static const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  const uint64_t begin = (offset + page - 1) / page * page, end = (offset + n) / page * page;
  // Advice only: a failure leaves the pages where they are, which is still correct.
  if (end > begin) (void)::madvise(data_ + begin, end - begin, MADV_DONTNEED);
}

at::Tensor tensor_view(const std::shared_ptr<MappedFile>& file, uint64_t offset, const std::vector<int64_t>& shape,
                       at::ScalarType dtype) {
  const uint64_t nbytes = static_cast<uint64_t>(c10::multiply_integers(shape)) * at::elementSize(dtype);
  void* data = const_cast<unsigned char*>(file->data()) + offset;  // private mapping: writes stay here
  return at::from_blob(
      data, shape, [file, offset, nbytes](void*) { file->release(offset, nbytes); },
      at::TensorOptions().dtype(dtype).device(at::kCPU));
}

}  // namespace flashvsr::io
